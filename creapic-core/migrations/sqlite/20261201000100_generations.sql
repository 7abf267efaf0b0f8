-- Synchronous generations (`POST /api/public/images/generate`), readable by id
-- (`GET /api/public/images/{id}`). A generation's id is the id of the hold that paid for it
-- (creapic-core/src/id.rs, `GenerationId::of_hold`), so a resumed attempt records under the same
-- id and the insert is `ON CONFLICT (id) DO NOTHING`. Written once, after the capture
-- (completed) or after the confirmed refund (failed); never updated. Tenancy: every read filters
-- on `org`. Lookups are by primary key: no listing reads this table yet, so no other index.
CREATE TABLE generations (
    id            BLOB PRIMARY KEY,
    org           BLOB NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    prompt        TEXT NOT NULL,
    aspect_ratio  TEXT NOT NULL,
    quality       TEXT NOT NULL,
    tokens        INTEGER NOT NULL CHECK (tokens >= 0),
    media         TEXT,
    error_code    TEXT,
    created_at    INTEGER NOT NULL,
    CHECK ((status = 'completed' AND media IS NOT NULL AND error_code IS NULL)
        OR (status = 'failed' AND media IS NULL AND error_code IS NOT NULL AND tokens = 0))
) STRICT;
