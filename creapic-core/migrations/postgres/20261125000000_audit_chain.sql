-- The audit log's hash chain (see creapic-core/src/audit_chain.rs).
-- Each event stores its predecessor's hash and its own; `audit_chain` is the one-row head that
-- every append locks and advances in its transaction, which also makes `seq` commit order.
-- Events written before this migration are not chained: the anchor starts after the last one.
ALTER TABLE audit_events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

CREATE TABLE audit_chain (
    id           smallint PRIMARY KEY CHECK (id = 1),
    anchor_seq   bigint NOT NULL,
    anchor_hash  bytea NOT NULL,
    last_seq     bigint NOT NULL,
    last_hash    bytea NOT NULL
);

INSERT INTO audit_chain (id, anchor_seq, anchor_hash, last_seq, last_hash)
SELECT 1, COALESCE(MAX(seq), 0), decode(repeat('00', 32), 'hex'),
       COALESCE(MAX(seq), 0), decode(repeat('00', 32), 'hex')
FROM audit_events;
