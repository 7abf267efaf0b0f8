-- Each idempotency record names the attempt its ledger keys derive from: a purged or settled
-- record's key starts a new attempt (a fresh charge), a takeover resumes the record's attempt.
-- NULL for records written before this migration (their ledger keys name no attempt).
ALTER TABLE idempotency_requests ADD COLUMN attempt uuid;
