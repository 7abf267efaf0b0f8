//! The conformance suite against the PostgreSQL store. Each test runs in a fresh schema of the
//! database `DATABASE_URL` names (default `postgres://postgres@127.0.0.1:5432/test`), so the
//! tests run in parallel without seeing each other. A server that cannot be reached fails the
//! tests: it is never a silent skip.

use std::sync::Arc;

use creapic_core::store::postgres::PgStore;
use creapic_core::store::{ConnectOptions, Store};

async fn postgres() -> Arc<dyn Store> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("test_{}", uuid_like());
    let options = ConnectOptions::default().schema(schema).max_connections(8);
    match PgStore::connect(&url, &options).await {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("PostgreSQL at {url} is required for these tests: {e}"),
    }
}

/// 32 random hex characters: a schema name no other test picks.
fn uuid_like() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

creapic_core::conformance_suite!(postgres);
