-- Most orders have no idempotency key (request_id NULL), and a NULL never conflicts, so the
-- key's index need not hold them: it becomes partial (request_id IS NOT NULL). Each such
-- order then writes one index page fewer, and the index it skips is keyed by user, so the
-- page it would have written is a random one: a page more in every commit's WAL frames.
-- SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt, and rebuilt
-- WITHOUT ROWID: the rows are kept in id order themselves, not in a rowid table beside an
-- index of id, one B-tree fewer written per order (ids are UUIDv7 text, so an insert goes
-- to the last page, as it did in that index).
CREATE TABLE orders_v3 (
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
    update_time         INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO orders_v3 (id, user_id, items, total_cents, status, request_id, request_fingerprint, create_time, update_time)
SELECT id, user_id, items, total_cents, status, request_id, request_fingerprint, create_time, update_time FROM orders;

DROP TABLE orders;
ALTER TABLE orders_v3 RENAME TO orders;

-- ListOrders of one user walks this index in id order.
CREATE INDEX orders_by_user ON orders (user_id, id);
-- One order per user and idempotency key (CreateOrder's ON CONFLICT names this predicate).
CREATE UNIQUE INDEX orders_by_request_id ON orders (user_id, request_id) WHERE request_id IS NOT NULL;
