-- One order per user and idempotency key, as a partial index (request_id IS NOT NULL), which
-- CreateOrder's ON CONFLICT now names. Expand only: the full UNIQUE (user_id, request_id)
-- stays, because during a rolling update the replicas still running the code before this one
-- name it in their ON CONFLICT, and without it every CreateOrder of theirs would fail. A
-- later migration may drop it (and so stop indexing the orders without a key, as SQLite's
-- 0005 does) once no replica that old runs.
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_request_id ON orders (user_id, request_id) WHERE request_id IS NOT NULL;
