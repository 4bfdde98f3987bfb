-- Fraud detection: every decision fds-worker makes, and the indexes its velocity rules need.

-- One row per decision. order_id is the id the caller sent (text: a Score call may precede the
-- order, and batch re-evaluations name existing orders by their UUID).
CREATE TABLE fds_results (
    id            bigserial   PRIMARY KEY,
    order_id      text        NOT NULL,
    score         integer     NOT NULL CHECK (score BETWEEN 0 AND 100),
    decision      text        NOT NULL CHECK (decision IN ('APPROVE', 'REVIEW', 'BLOCK')),
    reasons       jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(reasons) = 'array'),
    rules_version text        NOT NULL,
    source        text        NOT NULL CHECK (source IN ('realtime', 'batch', 'fallback')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX fds_results_order_id_idx ON fds_results (order_id, created_at);
CREATE INDEX fds_results_created_at_idx ON fds_results (created_at);

-- Velocity: orders per customer (orders_customer_id_created_at_idx exists), per client IP and per
-- card fingerprint in a time window, counted in one query that ORs the three bitmap index scans.
CREATE INDEX orders_client_ip_created_at_idx ON orders (client_ip, created_at)
    WHERE client_ip IS NOT NULL;
CREATE INDEX orders_card_fingerprint_created_at_idx
    ON orders ((payment ->> 'card_fingerprint'), created_at)
    WHERE payment ->> 'card_fingerprint' IS NOT NULL;
