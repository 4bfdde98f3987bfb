-- Rate limits shared by every replica (e.g. calls to the shipping partner): one row per limit and
-- one-second window, counting the calls asked for in it. Windows are the database's seconds, so
-- replicas with drifting clocks still share them.
CREATE TABLE rate_limit_windows (
    name         TEXT        NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    used         INTEGER     NOT NULL,
    PRIMARY KEY (name, window_start)
);
