-- beat-scheduler: the schedules (seeded from the checked-in file, changed at run time through
-- the CLI) and the slots published, one row per (schedule, planned time): the primary key is
-- what makes a slot publish once however many replicas plan it.
CREATE TABLE beat_schedules (
    name        TEXT PRIMARY KEY,
    task        TEXT NOT NULL,
    -- exactly one of: a crontab expression (5 fields) or an interval in seconds
    cron        TEXT,
    every_secs  INTEGER CHECK (every_secs > 0),
    kwargs      JSONB NOT NULL DEFAULT '{}'::jsonb,
    queue       TEXT NOT NULL,
    -- after downtime: 'skip' the missed runs, or run the 'latest' of them once
    missed      TEXT NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'latest')),
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    -- 'file' (seeded, and updated from the file while unedited) or 'cli' (added or edited by a person)
    source      TEXT NOT NULL DEFAULT 'file' CHECK (source IN ('file', 'cli')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every_secs IS NULL))
);

CREATE TABLE beat_slots (
    schedule    TEXT NOT NULL,
    planned_at  TIMESTAMPTZ NOT NULL,
    task_id     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, planned_at)
);
