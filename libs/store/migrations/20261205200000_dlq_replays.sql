-- dlq-reprocessor: the lineage of every message taken out of a dead-letter queue: replayed to
-- its queue or parked for a person, with its arguments before and after an edit, who did it
-- and when.
CREATE TABLE dlq_replays (
    id              BIGSERIAL PRIMARY KEY,
    task_id         TEXT,
    task            TEXT,
    dead_letter_queue TEXT NOT NULL,
    -- 'replayed' (back to its work queue) or 'parked' (to parked.<queue>, past the replay cap)
    outcome         TEXT NOT NULL CHECK (outcome IN ('replayed', 'parked')),
    replays         INTEGER NOT NULL,
    reason          TEXT,
    original_args   JSONB,
    edited_args     JSONB,
    replayed_by     TEXT NOT NULL,
    replayed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dlq_replays_task_id ON dlq_replays (task_id);
