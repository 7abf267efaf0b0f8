//! `SchemaStore` for every [`SqlBackend`]: the embedded migrations this build carries against
//! the ones sqlx recorded as applied (`_sqlx_migrations`), for readiness probes.
//!
//! A database that was never migrated has no `_sqlx_migrations` table: every migration is then
//! pending (the query's error is read as "none applied" only when the server answered; an
//! unreachable server stays an `Unavailable` error).

use async_trait::async_trait;

use crate::error::{Error, Result, StoreErrorKind};
use crate::store::SchemaStore;
use crate::store::sql::backend::SqlBackend;
use crate::store::sql::exec::{Columns, stmt};

/// The migrations sqlx recorded as applied successfully.
const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";

#[async_trait]
impl<B: SqlBackend> SchemaStore for B {
    async fn pending_migrations(&self) -> Result<u32> {
        let mut conn = self.read().await?;
        let applied: Vec<i64> = match stmt(APPLIED).fetch_all(&mut *conn).await {
            Ok(rows) => rows
                .iter()
                .map(|row| row.int("version"))
                .collect::<Result<_>>()?,
            Err(
                e @ Error::Store {
                    kind: StoreErrorKind::Unavailable,
                    ..
                },
            ) => return Err(e),
            // The server answered, without the table: nothing was ever applied.
            Err(_) => Vec::new(),
        };
        let pending = B::migrator()
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .filter(|m| !applied.contains(&m.version))
            .count();
        Ok(u32::try_from(pending).unwrap_or(u32::MAX))
    }
}
