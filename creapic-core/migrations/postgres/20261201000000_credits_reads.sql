-- What a key reads of its organization's credits (GET /api/public/credits and /usage):
-- the credits in open holds, summed over that organization's open holds only, and usage per
-- day, a range scan of that organization's entries by time.
CREATE INDEX holds_open_by_org ON holds (org) WHERE closed_at IS NULL;
CREATE INDEX ledger_entries_org_time ON ledger_entries (org, created_at);
