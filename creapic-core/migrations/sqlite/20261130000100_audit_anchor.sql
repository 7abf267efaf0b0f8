-- The audit chain's anchor event (see creapic-core/src/audit_chain.rs): a copy of the last event
-- a retention purge deleted, the one `audit_chain.anchor_hash` names. Verification recomputes the
-- anchor's hash from it and refuses an anchor whose event is younger than the retention, so
-- recent rows cannot be deleted by moving the anchor past them. One row at most (`slot = 1`),
-- replaced by each purge that moves the anchor, in the purge's transaction.
-- A log purged past a chained event before this migration has no anchor event and is reported
-- as `anchor_unproven` (the chain is days old when this ships; retention is 90 days).
CREATE TABLE audit_anchor (
    slot        INTEGER PRIMARY KEY CHECK (slot = 1),
    seq         INTEGER NOT NULL,
    id          BLOB NOT NULL,
    org         BLOB NOT NULL,
    at          INTEGER NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    key_id      BLOB,
    key_prefix  TEXT,
    detail      TEXT,
    prev_hash   BLOB,
    hash        BLOB
) STRICT;
