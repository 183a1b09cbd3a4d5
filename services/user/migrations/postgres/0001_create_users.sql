-- Users. Ids are UUIDv7 text, so ORDER BY id is creation order (see pagination); the "C"
-- collation compares them byte by byte, as SQLite does, whatever the database's locale.
CREATE TABLE users (
    id          TEXT   COLLATE "C" PRIMARY KEY,
    name        TEXT   NOT NULL,
    -- Unique here, not by a read-then-write in the handler: two concurrent CreateUser calls
    -- with one email cannot both succeed, whichever replica they reach.
    email       TEXT   NOT NULL UNIQUE,
    create_time BIGINT NOT NULL, -- microseconds since the Unix epoch
    update_time BIGINT NOT NULL
);
