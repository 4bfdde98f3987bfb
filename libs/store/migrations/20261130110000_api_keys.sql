-- API keys made with `order-api keys create`. Only the SHA-256 of each key is kept (the key is
-- shown once, when it is made); `id` is the public part of the key (`sfk_<id>_<secret>`).
CREATE TABLE api_keys (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    -- Scope names (orders:write, orders:read, reports, fds:score, admin).
    scopes     text[]      NOT NULL,
    -- Hex SHA-256 of the whole key.
    hash       text        NOT NULL CHECK (length(hash) = 64),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set by `order-api keys revoke`: the key is refused from then on (within the services'
    -- API_KEYS_CACHE_SECS).
    revoked_at timestamptz
);
