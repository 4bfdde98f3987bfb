-- Idempotency keys scoped to a caller: a key is unique per (scope, key), where scope is the
-- caller's API key id ('' for an anonymous caller), so one caller cannot pre-claim or replay
-- another caller's key. Existing keys become the anonymous caller's.

ALTER TABLE idempotency_keys ADD COLUMN scope text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (scope, key);
