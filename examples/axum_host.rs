//! Mounting creapic in an axum application: the kit is one `tower::Service`, so it goes under a
//! prefix with `Router::nest_service` (or at the root with `fallback_service`) next to the
//! host's own routes. The host's login layer is where a dashboard user would be put into the
//! request extensions (`creapic_server_kit::auth::DashboardUser`) for the key-management routes.
//!
//! Run: `cargo run --example axum_host` then `curl localhost:3000/creapic/api/openapi`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use creapic_core::Creapic;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::ServiceBuilder;
use creapic_server_kit::media::{MediaStore, SigningKey};
use creapic_server_kit::pipeline::Pipeline;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let creapic = ServiceBuilder::new(core, pipeline).build();

    let app = Router::new()
        .route("/", get(|| async { "the host's own page" }))
        // Requests to /creapic/api/... reach the kit as /api/...
        .nest_service("/creapic", creapic);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://{}/creapic/api/openapi",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
