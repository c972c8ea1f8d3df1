-- The POZ store's schema. Portable: the same statements run on Postgres
-- and SQLite (BYTEA is a BLOB to SQLite; no serial columns, IDs are
-- random bytes), so one migration set serves both backends.

-- One row per record: its current head. `head_record` is the record as
-- MASTER serves it at the head, without history and zone entries (those
-- live in their own tables and are appended, never rewritten).
CREATE TABLE records (
    record_id       BYTEA PRIMARY KEY,
    head_serial     BIGINT NOT NULL,
    head_hash       BYTEA NOT NULL,
    head_timestamp  BIGINT NOT NULL,
    head_record     BYTEA NOT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);

-- Append-only master-zone history. The primary key is what makes a
-- second, different revision N impossible to store.
CREATE TABLE master_revisions (
    record_id    BYTEA NOT NULL,
    serial       BIGINT NOT NULL,
    master_hash  BYTEA NOT NULL,
    master_zone  BYTEA NOT NULL,
    stored_ms    BIGINT NOT NULL,
    PRIMARY KEY (record_id, serial)
);

CREATE TABLE domains (
    domain     TEXT PRIMARY KEY,
    record_id  BYTEA NOT NULL
);

-- Zone entries, one row each, append-only. `handle` is set for identity
-- bindings, `target` for revocations.
CREATE TABLE entries (
    record_id  BYTEA NOT NULL,
    zone_type  INTEGER NOT NULL,
    digest     BYTEA NOT NULL,
    kind       INTEGER NOT NULL,
    handle     TEXT,
    target     BYTEA,
    issued_at  BIGINT,
    entry      BYTEA NOT NULL,
    stored_ms  BIGINT NOT NULL,
    PRIMARY KEY (record_id, zone_type, digest)
);
CREATE INDEX entries_by_handle ON entries (record_id, handle);
CREATE INDEX entries_by_target ON entries (record_id, target);

CREATE TABLE mirrors (
    record_id  BYTEA NOT NULL,
    position   INTEGER NOT NULL,
    host       BYTEA NOT NULL,
    PRIMARY KEY (record_id, position)
);

CREATE TABLE submissions (
    submission_id  BYTEA PRIMARY KEY,
    state          INTEGER NOT NULL,
    request        BYTEA NOT NULL,
    entry          BYTEA,
    message        TEXT NOT NULL,
    updated_ms     BIGINT NOT NULL
);

-- A retried write with the same key and the same request gets the same
-- answer; the same key with another request is refused.
CREATE TABLE idempotency_keys (
    idem_key      TEXT PRIMARY KEY,
    request_hash  BYTEA NOT NULL,
    response      BYTEA NOT NULL,
    created_ms    BIGINT NOT NULL
);

-- Forks and other events an operator must see.
CREATE TABLE security_events (
    event_id   BYTEA PRIMARY KEY,
    record_id  BYTEA,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
