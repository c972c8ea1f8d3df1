-- Pending binding requests per subject are capped and expire (SPEC
-- §14.4): each submission row names its subject and when it was first
-- asked. Rows written before this migration have neither and count for
-- no subject.
ALTER TABLE submissions ADD COLUMN subject BYTEA;
ALTER TABLE submissions ADD COLUMN created_ms BIGINT;
CREATE INDEX submissions_by_subject ON submissions (subject, state)
    WHERE subject IS NOT NULL;
