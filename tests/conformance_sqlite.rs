//! The conformance suite against the SQLite store: each test gets its own database file (WAL,
//! busy timeout) under cargo's per-target temporary directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use creapic_core::store::sqlite::SqliteStore;
use creapic_core::store::{ConnectOptions, Store};

async fn sqlite() -> Arc<dyn Store> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-sqlite");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let file = dir.join(format!(
        "{}-{nanos}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let url = format!("sqlite://{}", file.display());
    let store = SqliteStore::connect(&url, &ConnectOptions::default())
        .await
        .expect("open the SQLite store");
    Arc::new(store)
}

creapic_core::conformance_suite!(sqlite);
