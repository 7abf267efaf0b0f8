-- creapic store schema, PostgreSQL. Released migrations are immutable: change the schema with a
-- new file, never by editing this one (sqlx refuses to start on a checksum mismatch).
--
-- Conventions: ids are uuid, timestamps bigint unix milliseconds, credits bigint (bounded far
-- below i64::MAX by the core), digests 32-byte bytea, scopes the u8 bit set as bigint.

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    created_at  bigint NOT NULL
);

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  bigint NOT NULL
);

-- seq records the order of joining: the first owner is the owner with the smallest seq.
CREATE TABLE memberships (
    seq         bigserial PRIMARY KEY,
    org         uuid NOT NULL REFERENCES orgs (id),
    user_id     uuid NOT NULL REFERENCES users (id),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    UNIQUE (org, user_id)
);
CREATE INDEX memberships_owners ON memberships (org, seq) WHERE role = 'owner';

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    org           uuid NOT NULL REFERENCES orgs (id),
    digest        bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    name          text NOT NULL,
    prefix        text NOT NULL,
    scopes        bigint NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('live', 'test')),
    created_at    bigint NOT NULL,
    created_by    uuid NOT NULL,
    last_used_at  bigint,
    deleted_at    bigint,
    expires_at    bigint
);
-- list_keys (keyset on id) and count_active_keys.
CREATE INDEX api_keys_org_id ON api_keys (org, id);
CREATE INDEX api_keys_org_active ON api_keys (org, id) WHERE deleted_at IS NULL;

-- One row per organization that ever held credits. The CHECK is the last line of defence: every
-- debit is already a conditional UPDATE ... WHERE balance >= amount.
CREATE TABLE balances (
    org      uuid PRIMARY KEY,
    balance  bigint NOT NULL CHECK (balance >= 0)
);

CREATE TABLE holds (
    id          uuid PRIMARY KEY,
    org         uuid NOT NULL,
    job_id      uuid,
    amount      bigint NOT NULL CHECK (amount > 0),
    captured    bigint NOT NULL CHECK (captured >= 0),
    released    bigint NOT NULL CHECK (released >= 0),
    created_at  bigint NOT NULL,
    closed_at   bigint,
    CHECK (captured + released <= amount)
);

-- Append-only. seq is the pagination cursor; (org, idempotency_key) makes a repeat impossible to
-- charge twice whatever the callers do.
CREATE TABLE ledger_entries (
    seq              bigserial PRIMARY KEY,
    id               uuid NOT NULL UNIQUE,
    org              uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('grant', 'debit', 'hold', 'capture', 'release')),
    delta            bigint NOT NULL,
    amount           bigint NOT NULL CHECK (amount >= 0),
    balance_after    bigint NOT NULL CHECK (balance_after >= 0),
    hold_id          uuid,
    job_id           uuid,
    idempotency_key  text NOT NULL,
    fingerprint      text NOT NULL,
    created_at       bigint NOT NULL,
    UNIQUE (org, idempotency_key)
);
CREATE INDEX ledger_entries_org_seq ON ledger_entries (org, seq);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    org               uuid NOT NULL,
    key_id            uuid,
    kind              text NOT NULL,
    mode              text NOT NULL,
    status            text NOT NULL,
    unit_cost         bigint NOT NULL,
    hold_id           uuid,
    idempotency_key   text NOT NULL,
    created_at        bigint NOT NULL,
    updated_at        bigint NOT NULL,
    finished_at       bigint,
    lease_worker      text,
    lease_expires_at  bigint,
    attempts          bigint NOT NULL DEFAULT 0,
    UNIQUE (org, idempotency_key)
);
CREATE INDEX jobs_org_id ON jobs (org, id);
-- The claim query scans only jobs that are not terminal, in id (creation) order.
CREATE INDEX jobs_open ON jobs (id) WHERE status IN ('queued', 'running');

CREATE TABLE job_items (
    job_id         uuid NOT NULL REFERENCES jobs (id),
    idx            bigint NOT NULL,
    input          text NOT NULL,
    status         text NOT NULL,
    output         text,
    error_code     text,
    error_message  text,
    finished_at    bigint,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE audit_events (
    seq         bigserial PRIMARY KEY,
    id          uuid NOT NULL,
    org         uuid NOT NULL,
    at          bigint NOT NULL,
    action      text NOT NULL,
    actor       text NOT NULL,
    ip          text,
    user_agent  text,
    key_id      uuid,
    key_prefix  text,
    detail      text
);
-- Reads: one organization, keyset on seq. Purge: by time, in bounded batches.
CREATE INDEX audit_events_org_seq ON audit_events (org, seq);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE idempotency_requests (
    org              uuid NOT NULL,
    key              text NOT NULL,
    fingerprint      bytea NOT NULL,
    created_at       bigint NOT NULL,
    locked_until     bigint,
    response_status  bigint,
    response_body    bytea,
    PRIMARY KEY (org, key)
);
CREATE INDEX idempotency_requests_created ON idempotency_requests (created_at);
