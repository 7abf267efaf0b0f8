-- Organization membership management (issue #17 item 4): who belongs to which organization.
-- `joined_at` (unix ms) records when a member joined; memberships recorded before this migration
-- keep NULL (not known), an organization's creator is given the organization's creation time.
-- `memberships_by_user` serves `OrgStore::orgs_of_user` (WHERE user_id = $1 AND org > $2 ORDER
-- BY org); `OrgStore::members` is served by the UNIQUE (org, user_id) index.
ALTER TABLE memberships ADD COLUMN joined_at bigint;
UPDATE memberships SET joined_at = (SELECT created_at FROM orgs WHERE orgs.id = memberships.org)
    WHERE seq = (SELECT MIN(m.seq) FROM memberships m WHERE m.org = memberships.org);
CREATE INDEX memberships_by_user ON memberships (user_id, org);
