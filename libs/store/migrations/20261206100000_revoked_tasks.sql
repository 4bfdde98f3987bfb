-- Revoked task ids (remote control `revoke`), kept so a revoke outlives worker restarts and
-- reaches workers that were offline when it was broadcast (celery #8888). Read by every worker
-- when it connects and every 2 s; rows past expires_at are deleted by the writers.
CREATE TABLE IF NOT EXISTS revoked_tasks (
    task_id    TEXT PRIMARY KEY,
    revoked_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tasks_revoked_at ON revoked_tasks (revoked_at);
