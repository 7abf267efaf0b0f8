-- Console accounts (issue #19): a password hash per user (Argon2id PHC string) and server-side
-- sessions, stored by the SHA-256 digest of the browser's token only. `sessions_by_user` serves
-- the per-user cap (oldest first); `sessions_by_expiry` and `sessions_by_last_seen` serve the
-- purge of ended sessions.
CREATE TABLE passwords (
    user_id     uuid PRIMARY KEY REFERENCES users (id),
    hash        text NOT NULL,
    updated_at  bigint NOT NULL
);

CREATE TABLE sessions (
    digest        bytea PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id),
    created_at    bigint NOT NULL,
    last_seen_at  bigint NOT NULL,
    expires_at    bigint NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);
