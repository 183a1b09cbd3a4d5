-- Orders. Ids are UUIDv7 text, so ORDER BY id is creation order (see pagination); the "C"
-- collation compares them byte by byte, as SQLite does, whatever the database's locale.
CREATE TABLE orders (
    id          TEXT   COLLATE "C" PRIMARY KEY,
    user_id     TEXT   NOT NULL,
    -- The lines, [{sku, quantity, unit_price_cents}]: always read and written with their
    -- order, never queried on their own.
    items       JSONB  NOT NULL,
    total_cents BIGINT NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('PENDING', 'CANCELLED')),
    -- The idempotency key of CreateOrder. UNIQUE makes a repeated or concurrent
    -- CreateOrder with one key create one order, across every replica; NULL never conflicts.
    request_id  TEXT   UNIQUE,
    create_time BIGINT NOT NULL, -- microseconds since the Unix epoch
    update_time BIGINT NOT NULL
);

-- ListOrders of one user walks this index in id order.
CREATE INDEX orders_by_user ON orders (user_id, id);
