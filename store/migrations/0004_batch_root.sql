-- Batches as an auditable record of what a provider issued (SPEC §8.9):
-- each entry carrying a batch signature is indexed by the batch root
-- digest it proves to, so an auditor can list a whole batch and check it.
ALTER TABLE entries ADD COLUMN batch_root BYTEA;
CREATE INDEX entries_by_batch ON entries (record_id, batch_root) WHERE batch_root IS NOT NULL;
