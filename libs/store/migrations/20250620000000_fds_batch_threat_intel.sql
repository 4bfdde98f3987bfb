-- Batch fraud evaluation and the shared threat-intelligence feed.

-- The nightly batch reads one day of orders at a time.
CREATE INDEX orders_created_at_idx ON orders (created_at);

-- Every validated version of the threat-intelligence feed. One replica runs the refresh task and
-- writes a row; every fds-worker replica polls for a newer version and swaps it in.
-- snapshot: {"ips": ["203.0.113.0/24", …], "email_domains": ["mailinator.com", …]} (normalized).
CREATE TABLE threat_intel (
    version    bigserial   PRIMARY KEY,
    source     text        NOT NULL,
    snapshot   jsonb       NOT NULL CHECK (jsonb_typeof(snapshot) = 'object'),
    -- When this content was first fetched, and when a fetch last found it unchanged.
    fetched_at timestamptz NOT NULL DEFAULT now(),
    checked_at timestamptz NOT NULL DEFAULT now()
);
