-- Users. Ids are UUIDv7 text, so ORDER BY id is creation order (see pagination).
CREATE TABLE users (
    id          TEXT    PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL,
    -- Unique here, not by a read-then-write in the handler: two concurrent CreateUser calls
    -- with one email cannot both succeed.
    email       TEXT    NOT NULL UNIQUE,
    create_time INTEGER NOT NULL, -- microseconds since the Unix epoch
    update_time INTEGER NOT NULL
);
