-- The analytics sink's schema (issue 8). Applied in order by the sink at start-up; each
-- file once (recorded in sink_schema_migrations). Money is NUMERIC(15,2) as in the seed.

-- Where the sink is in each partition: written in the same transaction as the rows, so
-- a restart resumes exactly after the last row written (exactly once into PostgreSQL).
CREATE TABLE sink_offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT  NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Every event of every aggregate, append-only, in the seed's event-store shape. The event
-- id is derived from its cause, so an event sent again (a replay) is the same row.
CREATE TABLE event_store (
    id             UUID         PRIMARY KEY,
    aggregate_type TEXT         NOT NULL,
    aggregate_id   TEXT         NOT NULL,
    event_type     TEXT         NOT NULL,
    event_data     JSONB        NOT NULL,
    metadata       JSONB,
    -- The aggregate's version after the event; null for an event that changed nothing
    -- (a refusal carries the version the aggregate already had: see its metadata).
    version        BIGINT,
    occurred_at    TIMESTAMPTZ  NOT NULL,
    CONSTRAINT unique_version_per_aggregate UNIQUE (aggregate_type, aggregate_id, version)
);
CREATE INDEX idx_event_store_type ON event_store (event_type);
CREATE INDEX idx_event_store_occurred_at ON event_store (occurred_at DESC);

CREATE TABLE orders (
    id            UUID          PRIMARY KEY,
    customer_id   UUID          NOT NULL,
    customer_tier TEXT,
    status        TEXT          NOT NULL,
    currency      CHAR(3)       NOT NULL,
    subtotal      NUMERIC(15,2),
    discount      NUMERIC(15,2),
    tax           NUMERIC(15,2),
    shipping_cost NUMERIC(15,2),
    total         NUMERIC(15,2),
    cancel_reason TEXT,
    created_at    TIMESTAMPTZ   NOT NULL,
    completed_at  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ   NOT NULL,
    version       BIGINT        NOT NULL
);
CREATE INDEX idx_orders_customer_id ON orders (customer_id);
CREATE INDEX idx_orders_status ON orders (status);

CREATE TABLE order_lines (
    order_id   UUID          NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    INTEGER       NOT NULL,
    sku        TEXT          NOT NULL,
    quantity   INTEGER       NOT NULL CHECK (quantity > 0),
    unit_price NUMERIC(15,2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX idx_order_lines_sku ON order_lines (sku);

CREATE TABLE payments (
    order_id   UUID          PRIMARY KEY,
    status     TEXT          NOT NULL,
    currency   CHAR(3)       NOT NULL,
    authorized NUMERIC(15,2) NOT NULL DEFAULT 0,
    captured   NUMERIC(15,2) NOT NULL DEFAULT 0,
    refunded   NUMERIC(15,2) NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ   NOT NULL
);

CREATE TABLE shipments (
    order_id   UUID          PRIMARY KEY,
    status     TEXT          NOT NULL,
    carrier    TEXT,
    tracking   TEXT,
    cost       NUMERIC(15,2),
    updated_at TIMESTAMPTZ   NOT NULL
);

-- One row per stock-changing inventory event.
CREATE TABLE stock_movements (
    event_id    UUID        PRIMARY KEY,
    sku         TEXT        NOT NULL,
    warehouse   TEXT,
    kind        TEXT        NOT NULL,
    quantity    INTEGER     NOT NULL,
    order_id    UUID,
    occurred_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_stock_movements_sku ON stock_movements (sku, occurred_at);

CREATE VIEW daily_revenue_by_tier AS
SELECT date_trunc('day', completed_at AT TIME ZONE 'UTC') AS day,
       coalesce(customer_tier, 'unknown') AS tier,
       currency,
       count(*) AS orders,
       sum(total) AS revenue
FROM orders
WHERE status = 'COMPLETED'
GROUP BY 1, 2, 3;

-- Captured − refunded per order against the order's final total: every completed order
-- balances, every cancelled one nets to zero; an order still under way is neither (null).
CREATE VIEW payment_reconciliation AS
SELECT o.id AS order_id,
       o.status,
       o.total,
       coalesce(p.captured, 0) - coalesce(p.refunded, 0) AS net_collected,
       CASE WHEN o.status = 'COMPLETED' THEN coalesce(p.captured, 0) - coalesce(p.refunded, 0) = o.total
            WHEN o.status = 'CANCELLED' THEN coalesce(p.captured, 0) - coalesce(p.refunded, 0) = 0
       END AS balanced
FROM orders o
LEFT JOIN payments p ON p.order_id = o.id;
