-- Organizations take turns at claiming: a claim counts each candidate organization's jobs
-- running under a live lease, one range of this index per organization.
CREATE INDEX jobs_running_org ON jobs (org, lease_expires_at) WHERE status = 'running';
