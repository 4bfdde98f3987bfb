-- What happened to orders, one line per event (order.created, …), kept in the database for 90
-- days and then archived by archive_old_logs as compressed JSON lines in the object store.
CREATE TABLE activity_logs (
    id         BIGSERIAL   PRIMARY KEY,
    order_id   UUID,
    event      TEXT        NOT NULL,
    details    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX activity_logs_created_at ON activity_logs (created_at);

-- One row per archive object: planned (done = false) before the object is written, done in the
-- transaction that deletes the archived lines. A run that stopped half-way finds its planned
-- batch and writes the same object again before deleting: no line is lost or archived twice.
CREATE TABLE log_archives (
    first_id   BIGINT      PRIMARY KEY,
    last_id    BIGINT      NOT NULL,
    cutoff     TIMESTAMPTZ NOT NULL,
    path       TEXT        NOT NULL,
    lines      INTEGER,
    done       BOOLEAN     NOT NULL DEFAULT false,
    planned_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
