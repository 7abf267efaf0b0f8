-- creapic store schema, SQLite. Released migrations are immutable: change the schema with a
-- new file, never by editing this one (sqlx refuses to start on a checksum mismatch).
--
-- Conventions: STRICT tables; ids are 16-byte BLOB uuids (byte order = uuid order, so ORDER BY id
-- is creation order for v7 ids), timestamps INTEGER unix milliseconds, credits INTEGER (bounded
-- far below i64::MAX by the core), digests 32-byte BLOB, scopes the u8 bit set as INTEGER.
-- seq columns are INTEGER PRIMARY KEY AUTOINCREMENT: strictly increasing, never reused.

CREATE TABLE users (
    id          BLOB PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE orgs (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- seq records the order of joining: the first owner is the owner with the smallest seq.
CREATE TABLE memberships (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    org         BLOB NOT NULL REFERENCES orgs (id),
    user_id     BLOB NOT NULL REFERENCES users (id),
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    UNIQUE (org, user_id)
) STRICT;
CREATE INDEX memberships_owners ON memberships (org, seq) WHERE role = 'owner';

CREATE TABLE api_keys (
    id            BLOB PRIMARY KEY,
    org           BLOB NOT NULL REFERENCES orgs (id),
    digest        BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    scopes        INTEGER NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    created_at    INTEGER NOT NULL,
    created_by    BLOB NOT NULL,
    last_used_at  INTEGER,
    deleted_at    INTEGER,
    expires_at    INTEGER
) STRICT;
-- list_keys (keyset on id) and count_active_keys.
CREATE INDEX api_keys_org_id ON api_keys (org, id);
CREATE INDEX api_keys_org_active ON api_keys (org, id) WHERE deleted_at IS NULL;

-- One row per organization that ever held credits. The CHECK is the last line of defence: every
-- debit is already a conditional UPDATE ... WHERE balance >= amount.
CREATE TABLE balances (
    org      BLOB PRIMARY KEY,
    balance  INTEGER NOT NULL CHECK (balance >= 0)
) STRICT;

CREATE TABLE holds (
    id          BLOB PRIMARY KEY,
    org         BLOB NOT NULL,
    job_id      BLOB,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    captured    INTEGER NOT NULL CHECK (captured >= 0),
    released    INTEGER NOT NULL CHECK (released >= 0),
    created_at  INTEGER NOT NULL,
    closed_at   INTEGER,
    CHECK (captured + released <= amount)
) STRICT;

-- Append-only. seq is the pagination cursor; (org, idempotency_key) makes a repeat impossible to
-- charge twice whatever the callers do.
CREATE TABLE ledger_entries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               BLOB NOT NULL UNIQUE,
    org              BLOB NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('grant', 'debit', 'hold', 'capture', 'release')),
    delta            INTEGER NOT NULL,
    amount           INTEGER NOT NULL CHECK (amount >= 0),
    balance_after    INTEGER NOT NULL CHECK (balance_after >= 0),
    hold_id          BLOB,
    job_id           BLOB,
    idempotency_key  TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    UNIQUE (org, idempotency_key)
) STRICT;
CREATE INDEX ledger_entries_org_seq ON ledger_entries (org, seq);

CREATE TABLE jobs (
    id                BLOB PRIMARY KEY,
    org               BLOB NOT NULL,
    key_id            BLOB,
    kind              TEXT NOT NULL,
    mode              TEXT NOT NULL,
    status            TEXT NOT NULL,
    unit_cost         INTEGER NOT NULL,
    hold_id           BLOB,
    idempotency_key   TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    lease_worker      TEXT,
    lease_expires_at  INTEGER,
    attempts          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (org, idempotency_key)
) STRICT;
CREATE INDEX jobs_org_id ON jobs (org, id);
-- The claim query scans only jobs that are not terminal, in id (creation) order.
CREATE INDEX jobs_open ON jobs (id) WHERE status IN ('queued', 'running');

CREATE TABLE job_items (
    job_id         BLOB NOT NULL REFERENCES jobs (id),
    idx            INTEGER NOT NULL,
    input          TEXT NOT NULL,
    status         TEXT NOT NULL,
    output         TEXT,
    error_code     TEXT,
    error_message  TEXT,
    finished_at    INTEGER,
    PRIMARY KEY (job_id, idx)
) STRICT;

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL,
    org         BLOB NOT NULL,
    at          INTEGER NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    key_id      BLOB,
    key_prefix  TEXT,
    detail      TEXT
) STRICT;
-- Reads: one organization, keyset on seq. Purge: by time, in bounded batches.
CREATE INDEX audit_events_org_seq ON audit_events (org, seq);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE idempotency_requests (
    org              BLOB NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    locked_until     INTEGER,
    response_status  INTEGER,
    response_body    BLOB,
    PRIMARY KEY (org, key)
) STRICT;
CREATE INDEX idempotency_requests_created ON idempotency_requests (created_at);
