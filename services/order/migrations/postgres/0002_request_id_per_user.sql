-- request_id is scoped to the order's user: UNIQUE (user_id, request_id) instead of
-- UNIQUE (request_id), and the fingerprint of what the first request asked for is kept
-- beside it (a key reused for a different order is refused). Orders stored before this
-- have no fingerprint (NULL): unknown, so a repeat of their key is accepted.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_request_id_key;
-- SHA-256 (hex) of the user id and items of the request that created the order.
ALTER TABLE orders ADD COLUMN request_fingerprint TEXT;
ALTER TABLE orders ADD CONSTRAINT orders_user_id_request_id_key UNIQUE (user_id, request_id);
