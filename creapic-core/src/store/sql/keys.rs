//! API keys on both SQL backends: `KeyStore` for every [`SqlBackend`].
//!
//! Keys are found by digest only (the plaintext never reaches a store). Creating a key counts
//! the organization's active keys after locking the organization's row, so concurrent creations
//! queue and the limit holds; deleting is soft (`deleted_at`), audited in the same transaction
//! and announced by the backend ([`SqlBackend::key_deleted`]: PostgreSQL notifies every replica).

use std::collections::HashSet;

use async_trait::async_trait;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{KeyId, OrgId};
use crate::key::{ApiKey, KeyDigest, NewKey};
use crate::page::Page;
use crate::store::sql::audit::{insert_audit, insert_audits};
use crate::store::sql::backend::{Conn, SqlBackend};
use crate::store::sql::exec::{Columns, built, push_param, stmt};
use crate::store::sql::orgs::lock_org;
use crate::store::sql::rows::{self, key_columns, usage_event};
use crate::store::{KeyQuery, KeyStore, KeyUsage};

/// `KeyStore::insert_key`, the same text on both backends: the organization's active keys,
/// counted inside the inserting transaction after the organization row is locked
/// ([`lock_org`]).
const ACTIVE_KEYS_COUNT: &str =
    "SELECT COUNT(*) AS n FROM api_keys WHERE org = $1 AND deleted_at IS NULL";

/// The key row itself.
const KEY_INSERT: &str = "INSERT INTO api_keys (id, org, digest, name, prefix, \
     scopes, mode, created_at, created_by, last_used_at, deleted_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// What `insert_key` answers when the organization already holds `active` keys.
fn check_active_keys(active: u64, max: u64) -> Result<()> {
    if active >= max {
        return Err(Error::LimitExceeded {
            what: "active keys per organization",
            max,
        });
    }
    Ok(())
}

/// Most key usages in one `UPDATE … FROM (VALUES …)` (3 parameters each).
const USAGE_ROWS_PER_UPDATE: usize = 500;

/// `KeyStore::key`: `$1` the key, `$2` its organization.
const KEY_OF_ORG: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE id = $1 AND org = $2"
);
/// `KeyStore::key_by_digest`, on every authentication that misses the cache: `$1` the digest.
const KEY_BY_DIGEST: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE digest = $1"
);
/// `KeyStore::key_by_id`: `$1` the key.
const KEY_BY_ID: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");
/// `KeyStore::list_keys`: `$1` the organization, `$2` whether deleted keys count, `$3` the
/// cursor (a key id) or NULL, `$4` the page size plus one.
const KEYS_OF_ORG: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE org = $1 AND ($2 OR deleted_at IS NULL) \
     AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
);
/// `KeyStore::delete_key`: `$1` the key, `$2` its organization, `$3` when; the key as deleted,
/// or no row when it was not there to delete.
const KEY_DELETE: &str = concat!(
    "UPDATE api_keys SET deleted_at = $3 WHERE id = $1 AND org = $2 \
     AND deleted_at IS NULL RETURNING ",
    key_columns!()
);
/// The start of a usage update, before its `VALUES` rows.
const USAGE_UPDATE_HEAD: &str = "UPDATE api_keys SET last_used_at = CASE \
     WHEN api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.t THEN u.t \
     ELSE api_keys.last_used_at END \
     FROM (SELECT column1 AS id, column2 AS org, MAX(column3) AS t FROM (VALUES ";
/// The end of a usage update, after its `VALUES` rows.
const USAGE_UPDATE_TAIL: &str = ") AS v GROUP BY column1, column2) AS u \
     WHERE api_keys.id = u.id AND api_keys.org = u.org \
     RETURNING api_keys.id AS id, api_keys.org AS org";
/// Longest `VALUES` row of a usage update: `,($n, $n, $n)` with 4-digit placeholders.
const USAGE_ROW_BYTES_MAX: usize = 24;

/// A key of `org` by id, as it is now (deleted or not).
async fn key_of<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    id: KeyId,
) -> Result<Option<ApiKey>> {
    let row = stmt(KEY_OF_ORG)
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(rows::key).transpose()
}

#[async_trait]
impl<B: SqlBackend> KeyStore for B {
    async fn insert_key(&self, new: &NewKey, audit: &AuditEvent) -> Result<()> {
        let k = &new.key;
        let mut tx = self.write().await?;
        // Count-then-insert is atomic: the organization row is locked until the transaction
        // ends, so concurrent creations queue behind this one.
        lock_org::<B>(&mut tx, k.org).await?;
        let active = stmt(ACTIVE_KEYS_COUNT)
            .bind(k.org.as_uuid())
            .fetch_one(&mut *tx)
            .await?
            .count("n")?;
        check_active_keys(active, new.active_max)?;
        stmt(KEY_INSERT)
            .bind(k.id.as_uuid())
            .bind(k.org.as_uuid())
            .bind(new.digest.as_bytes().as_slice())
            .bind(k.name.as_str())
            .bind(k.prefix.as_str())
            .bind(i64::from(k.scopes.bits()))
            .bind(k.mode.as_str())
            .bind(k.created_at)
            .bind(k.created_by.as_uuid())
            .bind(k.last_used_at)
            .bind(k.deleted_at)
            .bind(k.expires_at)
            .execute(&mut *tx)
            .await?;
        insert_audit::<B>(&mut tx, audit).await?;
        B::commit(tx).await
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKey>> {
        let mut conn = self.read().await?;
        let row = stmt(KEY_BY_DIGEST)
            .bind(digest.as_bytes().as_slice())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(rows::key).transpose()
    }

    async fn key(&self, org: OrgId, id: KeyId) -> Result<Option<ApiKey>> {
        let mut conn = self.read().await?;
        key_of::<B>(&mut conn, org, id).await
    }

    async fn key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        let mut conn = self.read().await?;
        let row = stmt(KEY_BY_ID)
            .bind(id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(rows::key).transpose()
    }

    async fn list_keys(&self, org: OrgId, q: &KeyQuery) -> Result<Page<ApiKey, KeyId>> {
        let mut conn = self.read().await?;
        let rows = stmt(KEYS_OF_ORG)
            .bind(org.as_uuid())
            .bind(q.include_deleted)
            .bind(q.after.map(|k| k.as_uuid()))
            .bind(i64::from(q.limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows.iter().map(rows::key).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, q.limit, |k| k.id))
    }

    async fn count_active_keys(&self, org: OrgId) -> Result<u64> {
        let mut conn = self.read().await?;
        stmt(ACTIVE_KEYS_COUNT)
            .bind(org.as_uuid())
            .fetch_one(&mut *conn)
            .await?
            .count("n")
    }

    async fn delete_key(
        &self,
        org: OrgId,
        id: KeyId,
        at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<Option<ApiKey>> {
        let mut tx = self.write().await?;
        let row = stmt(KEY_DELETE)
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            // Not this organization's, or deleted before: answered as it is, nothing written.
            return key_of::<B>(&mut tx, org, id).await;
        };
        let key = rows::key(&row)?;
        insert_audit::<B>(&mut tx, audit).await?;
        B::key_deleted(&mut tx, &key).await?;
        B::commit(tx).await?;
        Ok(Some(key))
    }

    async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        // Every key first, then every event: the chain head is locked last (see audit.rs).
        let mut found: HashSet<(Uuid, Uuid)> = HashSet::with_capacity(usage.len());
        for chunk in usage.chunks(USAGE_ROWS_PER_UPDATE) {
            // One statement per chunk: the latest use per key moves `last_used_at` forward,
            // never back; the keys that exist come back for their `key.used` events.
            let mut text = String::with_capacity(
                USAGE_UPDATE_HEAD.len()
                    + chunk.len() * USAGE_ROW_BYTES_MAX
                    + USAGE_UPDATE_TAIL.len(),
            );
            text.push_str(USAGE_UPDATE_HEAD);
            for i in 0..chunk.len() {
                text.push_str(if i == 0 { "(" } else { ",(" });
                push_param(&mut text, 3 * i + 1);
                text.push_str(", ");
                push_param(&mut text, 3 * i + 2);
                text.push_str(", ");
                push_param(&mut text, 3 * i + 3);
                text.push(')');
            }
            text.push_str(USAGE_UPDATE_TAIL);
            let mut update = built(text);
            for u in chunk {
                update = update
                    .bind(u.key.as_uuid())
                    .bind(u.org.as_uuid())
                    .bind(u.last_used_at);
            }
            for row in update.fetch_all(&mut *tx).await? {
                found.insert((row.uuid("id")?, row.uuid("org")?));
            }
        }
        let events: Vec<AuditEvent> = usage
            .iter()
            .filter(|u| found.contains(&(u.key.as_uuid(), u.org.as_uuid())))
            .map(usage_event)
            .collect();
        insert_audits::<B>(&mut tx, &events).await?;
        B::commit(tx).await
    }
}
