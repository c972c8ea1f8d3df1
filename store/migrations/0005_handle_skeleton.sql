-- Look-alike handles (SPEC §8.4.2): each identity binding's confusable
-- skeleton (UTS #39 skeleton of the case-folded handle), so that a new
-- binding is checked against every live or reserved binding whose handle
-- looks the same, by index. The store fills the column for rows written
-- before this migration when it opens (the skeleton is computed in Rust,
-- not SQL).
--
-- "One live binding per handle" (SPEC §8.4.3) is not a unique index: a
-- binding is live or not by its revocation (another row), its expiry and
-- the clock, and a reserved handle blocks other subjects too; the store
-- checks it inside the commit transaction instead.
ALTER TABLE entries ADD COLUMN skeleton TEXT;
CREATE INDEX entries_by_skeleton ON entries (record_id, zone_type, skeleton)
    WHERE skeleton IS NOT NULL;
-- The rows still to fill: empty once filled, so the check at every start
-- costs an index probe, not a scan of every entry.
CREATE INDEX entries_without_skeleton ON entries (record_id)
    WHERE handle IS NOT NULL AND skeleton IS NULL;

-- Revoked bindings whose handle an operator freed (SPEC §8.4.3): the
-- revocation no longer reserves the handle.
CREATE TABLE handle_releases (
    record_id  BYTEA NOT NULL,
    digest     BYTEA NOT NULL,
    freed_ms   BIGINT NOT NULL,
    PRIMARY KEY (record_id, digest)
);
