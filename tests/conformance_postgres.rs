//! The conformance suite against the PostgreSQL store. Each test runs in a fresh schema of the
//! database `DATABASE_URL` names (default `postgres://postgres@127.0.0.1:5432/test`), so the
//! tests run in parallel without seeing each other. A server that cannot be reached fails the
//! tests: it is never a silent skip.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use creapic_core::store::Store;

async fn postgres() -> Arc<dyn Store> {
    let store = support::pg_store(&support::fresh_schema(), 8).await;
    support::drop_old_schemas(&store).await;
    Arc::new(store)
}

creapic_core::conformance_suite!(postgres);
