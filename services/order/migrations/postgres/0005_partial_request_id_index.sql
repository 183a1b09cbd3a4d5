-- Most orders have no idempotency key (request_id NULL), and a NULL never conflicts, so the
-- key's index need not hold them: it becomes partial, one index entry fewer per such order.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_user_id_request_id_key;
-- One order per user and idempotency key (CreateOrder's ON CONFLICT names this predicate).
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_request_id ON orders (user_id, request_id) WHERE request_id IS NOT NULL;
