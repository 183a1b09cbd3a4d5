-- request_id is scoped to the order's user: UNIQUE (user_id, request_id) instead of
-- UNIQUE (request_id), and the fingerprint of what the first request asked for is kept
-- beside it (a key reused for a different order is refused). SQLite cannot drop a column's
-- UNIQUE constraint, so the table is rebuilt. Orders stored before this have no
-- fingerprint (NULL): unknown, so a repeat of their key is accepted.
CREATE TABLE orders_v2 (
    id                  TEXT    PRIMARY KEY NOT NULL,
    user_id             TEXT    NOT NULL,
    items               TEXT    NOT NULL,
    total_cents         INTEGER NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('PENDING', 'CANCELLED')),
    -- The idempotency key of CreateOrder, per user; NULL (no key) never conflicts.
    request_id          TEXT,
    -- SHA-256 (hex) of the user id and items of the request that created the order.
    request_fingerprint TEXT,
    create_time         INTEGER NOT NULL,
    update_time         INTEGER NOT NULL,
    UNIQUE (user_id, request_id)
);

INSERT INTO orders_v2 (id, user_id, items, total_cents, status, request_id, create_time, update_time)
SELECT id, user_id, items, total_cents, status, request_id, create_time, update_time FROM orders;

DROP TABLE orders;
ALTER TABLE orders_v2 RENAME TO orders;

-- ListOrders of one user walks this index in id order.
CREATE INDEX orders_by_user ON orders (user_id, id);
