//! Console accounts on both SQL backends: `AccountStore` for every [`SqlBackend`].
//!
//! Sessions are rows keyed by the digest of the browser's token. Setting a password deletes the
//! person's sessions in the same transaction; inserting a session trims the person's oldest
//! beyond the cap in the same transaction, so neither can be observed half done.

use async_trait::async_trait;

use crate::account::{PasswordHash, Session, SessionDigest};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::UserId;
use crate::org::{Email, User};
use crate::store::AccountStore;
use crate::store::sql::backend::{SqlBackend, purge_in_batches};
use crate::store::sql::exec::{Columns, corrupt, stmt};
use crate::store::sql::rows;

/// Columns of `sessions`, in the order [`session`] reads them.
const SESSION_READ: &str = "SELECT digest, user_id, created_at, last_seen_at, expires_at \
     FROM sessions WHERE digest = $1";

/// A `sessions` row.
fn session(row: &impl Columns) -> Result<Session> {
    let digest: [u8; 32] = row
        .bytes("digest")?
        .try_into()
        .map_err(|_| corrupt("digest", "not 32 bytes"))?;
    Ok(Session {
        digest: SessionDigest::from_bytes(digest),
        user: UserId::from_uuid(row.uuid("user_id")?),
        created_at: row.time("created_at")?,
        last_seen_at: row.time("last_seen_at")?,
        expires_at: row.time("expires_at")?,
    })
}

#[async_trait]
impl<B: SqlBackend> AccountStore for B {
    async fn set_password(&self, user: UserId, hash: &PasswordHash, at: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        let known = stmt("SELECT 1 AS one FROM users WHERE id = $1")
            .bind(user.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(Error::NotFound { resource: "user" });
        }
        stmt(
            "INSERT INTO passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, \
             updated_at = excluded.updated_at",
        )
        .bind(user.as_uuid())
        .bind(hash.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        stmt("DELETE FROM sessions WHERE user_id = $1")
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await
    }

    async fn credentials(&self, email: &Email) -> Result<Option<(User, PasswordHash)>> {
        let mut conn = self.read().await?;
        let row = stmt(
            "SELECT u.id, u.email, u.created_at, p.hash FROM users u \
             JOIN passwords p ON p.user_id = u.id WHERE u.email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let hash = PasswordHash::from_phc(&row.text("hash")?).map_err(|e| corrupt("hash", e))?;
        Ok(Some((rows::user(&row)?, hash)))
    }

    async fn insert_session(&self, s: &Session, per_user_max: u32) -> Result<()> {
        let mut tx = self.write().await?;
        stmt(
            "INSERT INTO sessions (digest, user_id, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.digest.as_bytes().as_slice())
        .bind(s.user.as_uuid())
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await?;
        // The person's sessions beyond the cap, oldest first, go in the same transaction.
        stmt(
            "DELETE FROM sessions WHERE user_id = $1 AND digest NOT IN (SELECT digest \
             FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, digest DESC LIMIT $2)",
        )
        .bind(s.user.as_uuid())
        .bind(i64::from(per_user_max.max(1)))
        .execute(&mut *tx)
        .await?;
        B::commit(tx).await
    }

    async fn session(&self, digest: &SessionDigest) -> Result<Option<Session>> {
        let mut conn = self.read().await?;
        let row = stmt(SESSION_READ)
            .bind(digest.as_bytes().as_slice())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(session).transpose()
    }

    async fn touch_session(&self, digest: &SessionDigest, at: Timestamp) -> Result<()> {
        let mut conn = self.autocommit().await?;
        stmt("UPDATE sessions SET last_seen_at = $2 WHERE digest = $1 AND last_seen_at < $2")
            .bind(digest.as_bytes().as_slice())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, digest: &SessionDigest) -> Result<bool> {
        let mut conn = self.autocommit().await?;
        let done = stmt("DELETE FROM sessions WHERE digest = $1")
            .bind(digest.as_bytes().as_slice())
            .execute(&mut *conn)
            .await?;
        Ok(done == 1)
    }

    async fn purge_sessions(&self, now: Timestamp, idle_cutoff: Timestamp) -> Result<u64> {
        purge_in_batches(self, || {
            stmt(
                "DELETE FROM sessions WHERE digest IN (SELECT digest FROM sessions \
                 WHERE expires_at <= $1 OR last_seen_at < $2 LIMIT $3)",
            )
            .bind(now)
            .bind(idle_cutoff)
        })
        .await
    }
}
