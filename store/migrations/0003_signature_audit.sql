-- Every signature the signer makes, written before the signature leaves
-- the signer (a signature whose row could not be written is withheld).
-- Append-only: the signer's database role needs INSERT on this table only.
CREATE TABLE signature_audit (
    audit_id    BIGINT PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    key_id      BYTEA NOT NULL,
    record_id   BYTEA NOT NULL,
    zone_type   INTEGER NOT NULL,
    what        TEXT NOT NULL,
    digest      BYTEA NOT NULL,
    signature   BYTEA NOT NULL
);
CREATE INDEX signature_audit_by_record ON signature_audit (record_id, at_ms);
