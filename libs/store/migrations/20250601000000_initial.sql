-- ShopFDS jobs: initial schema. Orders and their items, the transactional outbox, the Celery-style
-- result store, once-only side-effect records and HTTP idempotency keys.

CREATE TABLE orders (
    id                 uuid        PRIMARY KEY,
    customer_id        text        NOT NULL CHECK (customer_id <> ''),
    customer_email     text        NOT NULL,
    customer_name      text        NOT NULL,
    account_created_at timestamptz,
    -- ISO 4217 alphabetic code; amounts are integers in the currency's minor unit.
    currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total              bigint      NOT NULL CHECK (total >= 0),
    shipping_address   jsonb       NOT NULL,
    billing_country    text        NOT NULL CHECK (length(billing_country) = 2),
    payment            jsonb       NOT NULL,
    client_ip          text,
    -- The FDS decision of the public API; widen with a new migration when a status is added.
    status             text        NOT NULL CHECK (status IN ('accepted', 'review', 'blocked')),
    fds                jsonb       NOT NULL,
    tasks              jsonb       NOT NULL,
    tracking_number    text,
    invoice_url        text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_customer_id_created_at_idx ON orders (customer_id, created_at);

CREATE TABLE order_items (
    order_id   uuid   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    integer NOT NULL CHECK (line_no >= 0),
    sku        text   NOT NULL CHECK (sku <> ''),
    name       text   NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Messages waiting for the relay. A row is published and then marked sent (sent_at) only after
-- the broker confirmed it; sent rows are purged later.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    task_id     text        NOT NULL,
    exchange    text        NOT NULL,
    routing_key text        NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
    properties  jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(properties) = 'object'),
    body        bytea       NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);

-- The relay only ever scans unsent rows; keep that index small.
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Celery-compatible result store: one row per task id (Celery ids are arbitrary strings).
CREATE TABLE task_results (
    task_id    text        PRIMARY KEY,
    name       text        NOT NULL,
    queue      text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('PENDING', 'RECEIVED', 'STARTED', 'PROGRESS',
                                                     'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED',
                                                     'REJECTED')),
    retries    integer     NOT NULL DEFAULT 0 CHECK (retries >= 0),
    progress   jsonb,
    result     jsonb,
    error      jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);

CREATE INDEX task_results_expires_at_idx ON task_results (expires_at) WHERE expires_at IS NOT NULL;

-- Side effects that already happened, keyed by task id or a business key ("invoice:<order id>").
CREATE TABLE processed_tasks (
    key          text        PRIMARY KEY,
    task_id      text        NOT NULL,
    result       jsonb       NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- HTTP Idempotency-Key: the first request's body hash and the response it produced.
CREATE TABLE idempotency_keys (
    key             text        PRIMARY KEY,
    request_hash    text        NOT NULL,
    response_status integer     CHECK (response_status BETWEEN 100 AND 599),
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
