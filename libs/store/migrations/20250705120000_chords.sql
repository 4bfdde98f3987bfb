-- Chords counted in PostgreSQL (the result store), so the worker finishing a chord's last header
-- part, and only that one, publishes the body with the ordered results.

-- One row per chord, keyed by the header's group id. `done` counts distinct parts that succeeded;
-- the UPDATE that increments it takes the row lock, so two parts finishing at once on two workers
-- serialize and exactly one sees done = size.
CREATE TABLE chords (
    group_id       text        PRIMARY KEY,
    size           integer     NOT NULL CHECK (size > 0),
    done           integer     NOT NULL DEFAULT 0,
    -- PENDING until the body was published (SUCCESS) or a part failed (FAILURE).
    state          text        NOT NULL DEFAULT 'PENDING'
                               CHECK (state IN ('PENDING', 'SUCCESS', 'FAILURE')),
    failed_task_id text,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chords_created_at_idx ON chords (created_at);

-- The parts that succeeded, keyed by task id: a redelivered part is not counted twice.
CREATE TABLE chord_parts (
    group_id    text        NOT NULL REFERENCES chords (group_id) ON DELETE CASCADE,
    task_id     text        NOT NULL,
    -- Position in the header (Celery's group_index); parts without one keep arrival order.
    group_index integer,
    seq         bigserial   NOT NULL,
    result      jsonb       NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, task_id)
);
