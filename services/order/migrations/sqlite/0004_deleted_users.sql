-- Users whose deletion this service has seen (the event meshwork.user.v1.deleted): their
-- pending orders were cancelled, and a new order for one of them is refused, even one whose
-- User check passed just before the deletion (CreateOrder inserts only if the user is not
-- here). Ids are never reused, so a row is never removed.
CREATE TABLE deleted_users (
    user_id     TEXT PRIMARY KEY NOT NULL,
    delete_time BIGINT NOT NULL -- microseconds since the Unix epoch
);
