//! Generation records on both SQL backends: `GenerationStore` for every [`SqlBackend`].
//!
//! A record's id is derived by the caller (a generation's is its hold's), so inserting is
//! idempotent by id: the insert and the read-back share one transaction, and a repeat — even one
//! racing the first insert on another connection, which `ON CONFLICT DO NOTHING` makes wait for
//! it — returns the row that won.

use async_trait::async_trait;

use crate::error::{Error, Result, StoreErrorKind};
use crate::generation::GenerationRecord;
use crate::id::{GenerationId, OrgId};
use crate::store::GenerationStore;
use crate::store::sql::backend::SqlBackend;
use crate::store::sql::exec::stmt;
use crate::store::sql::rows;

/// `GenerationStore::insert_generation`: a repeated id writes nothing (the caller then reads
/// the stored row back in the same transaction).
const GENERATION_INSERT: &str = "INSERT INTO generations (id, org, status, prompt, \
     aspect_ratio, quality, tokens, media, error_code, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING";

/// One generation by id, of any organization (the caller checks the organization).
const GENERATION_READ: &str = "SELECT id, org, status, prompt, aspect_ratio, \
     quality, tokens, media, error_code, created_at FROM generations WHERE id = $1";

#[async_trait]
impl<B: SqlBackend> GenerationStore for B {
    async fn insert_generation(&self, record: &GenerationRecord) -> Result<GenerationRecord> {
        let mut tx = self.write().await?;
        stmt(GENERATION_INSERT)
            .bind(record.id.as_uuid())
            .bind(record.org.as_uuid())
            .bind(record.outcome.status())
            .bind(record.prompt.as_str())
            .bind(record.aspect_ratio.as_str())
            .bind(record.quality.as_str())
            .bind(record.outcome.tokens())
            .bind(record.outcome.media())
            .bind(record.outcome.error_code())
            .bind(record.created_at)
            .execute(&mut *tx)
            .await?;
        let row = stmt(GENERATION_READ)
            .bind(record.id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
        let stored = rows::generation(&row)?;
        B::commit(tx).await?;
        if stored.org != record.org {
            return Err(Error::store(
                StoreErrorKind::Conflict,
                "generation already exists",
            ));
        }
        Ok(stored)
    }

    async fn generation(&self, org: OrgId, id: GenerationId) -> Result<Option<GenerationRecord>> {
        let mut conn = self.read().await?;
        let row = stmt(GENERATION_READ)
            .bind(id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row
            .as_ref()
            .map(rows::generation)
            .transpose()?
            .filter(|g| g.org == org))
    }
}
