-- The audit chain's anchor event (see creapic-core/src/audit_chain.rs): a copy of the last event
-- a retention purge deleted, the one `audit_chain.anchor_hash` names. Verification recomputes the
-- anchor's hash from it and refuses an anchor whose event is younger than the retention, so
-- recent rows cannot be deleted by moving the anchor past them. One row at most (`slot = 1`),
-- replaced by each purge that moves the anchor, in the purge's transaction.
-- A log purged past a chained event before this migration has no anchor event and is reported
-- as `anchor_unproven` (the chain is days old when this ships; retention is 90 days).
CREATE TABLE audit_anchor (
    slot        smallint PRIMARY KEY CHECK (slot = 1),
    seq         bigint NOT NULL,
    id          uuid NOT NULL,
    org         uuid NOT NULL,
    at          bigint NOT NULL,
    action      text NOT NULL,
    actor       text NOT NULL,
    ip          text,
    user_agent  text,
    key_id      uuid,
    key_prefix  text,
    detail      text,
    prev_hash   bytea,
    hash        bytea
);
