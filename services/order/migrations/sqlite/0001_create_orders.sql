-- Orders. Ids are UUIDv7 text, so ORDER BY id is creation order (see pagination).
CREATE TABLE orders (
    id          TEXT    PRIMARY KEY NOT NULL,
    user_id     TEXT    NOT NULL,
    -- The lines, as a JSON array of {sku, quantity, unit_price_cents}: always read and
    -- written with their order, never queried on their own.
    items       TEXT    NOT NULL,
    total_cents INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('PENDING', 'CANCELLED')),
    -- The idempotency key of CreateOrder. UNIQUE makes a repeated or concurrent
    -- CreateOrder with one key create one order; NULL (no key) never conflicts.
    request_id  TEXT    UNIQUE,
    create_time INTEGER NOT NULL, -- microseconds since the Unix epoch
    update_time INTEGER NOT NULL
);

-- ListOrders of one user walks this index in id order.
CREATE INDEX orders_by_user ON orders (user_id, id);
