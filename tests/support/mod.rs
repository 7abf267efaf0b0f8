//! Shared by the store test files (included with `#[path]`): where PostgreSQL is, fresh schemas
//! and SQLite files, and cleanup of what earlier runs left behind.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use creapic_core::store::ConnectOptions;
use creapic_core::store::postgres::PgStore;
use creapic_core::store::sqlite::SqliteStore;

/// `DATABASE_URL`, or the local default.
pub fn pg_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A schema name no other test picks: `test_<unix seconds>_<random>`.
pub fn fresh_schema() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("test_{}_{:016x}", unix_secs(), h.finish())
}

/// A store in `schema` (created and migrated if new). An unreachable server fails the test.
pub async fn pg_store(schema: &str, max_connections: u32) -> PgStore {
    let url = pg_url();
    let options = ConnectOptions::default()
        .schema(schema)
        .max_connections(max_connections);
    match PgStore::connect(&url, &options).await {
        Ok(store) => store,
        Err(e) => panic!("PostgreSQL at {url} is required for these tests: {e}"),
    }
}

/// Drops test schemas older than an hour (at most 20 per call), so repeated runs on one
/// database do not pile up catalogs.
pub async fn drop_old_schemas(store: &PgStore) {
    let cutoff = unix_secs().saturating_sub(3600);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^test_[0-9]+_[0-9a-f]+$' \
         ORDER BY nspname LIMIT 200",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_default();
    let old = names
        .into_iter()
        .filter(|n| {
            n.split('_')
                .nth(1)
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|t| t < cutoff)
        })
        .take(20);
    for name in old {
        // The name matched a strict pattern of lowercase hex and digits above.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE"
        )))
        .execute(store.pool())
        .await;
    }
}

/// A new SQLite file path under cargo's per-target temporary directory.
pub fn sqlite_path(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(what);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!(
        "{}-{nanos}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Opens the SQLite store at `path`.
pub async fn sqlite_store(path: &std::path::Path, busy_timeout: Duration) -> SqliteStore {
    let url = format!("sqlite://{}", path.display());
    SqliteStore::connect(&url, &ConnectOptions::default().busy_timeout(busy_timeout))
        .await
        .expect("open the SQLite store")
}
