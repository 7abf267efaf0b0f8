//! The conformance suite against the in-memory store.

use std::sync::Arc;

use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;

async fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

creapic_core::conformance_suite!(memory);
