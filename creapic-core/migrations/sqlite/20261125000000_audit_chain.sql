-- The audit log's hash chain (see creapic-core/src/audit_chain.rs).
-- Each event stores its predecessor's hash and its own; `audit_chain` is the one-row head that
-- every append reads and advances inside its write transaction.
-- Events written before this migration are not chained: the anchor starts after the last one.
ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_events ADD COLUMN hash BLOB;

CREATE TABLE audit_chain (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    anchor_seq   INTEGER NOT NULL,
    anchor_hash  BLOB NOT NULL,
    last_seq     INTEGER NOT NULL,
    last_hash    BLOB NOT NULL
) STRICT;

INSERT INTO audit_chain (id, anchor_seq, anchor_hash, last_seq, last_hash)
SELECT 1, COALESCE(MAX(seq), 0), zeroblob(32), COALESCE(MAX(seq), 0), zeroblob(32)
FROM audit_events;
