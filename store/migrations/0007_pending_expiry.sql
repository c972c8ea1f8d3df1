-- The leading store's sweep of expired pending binding requests
-- (Store::expire_pending, every minute) finds them by age without
-- scanning the table: a partial index over pending rows only.
CREATE INDEX submissions_pending_by_age ON submissions (created_ms) WHERE state = 1;
