//! Serving creapic with plain hyper, no axum in the host: the kit's `tower::Service` is adapted
//! with `hyper_util::service::TowerToHyperService` and served per connection. Its error type is
//! `Infallible`, so hyper never drops a connection because of a failed request: every failure
//! is a JSON response.
//!
//! Run: `cargo run --example hyper_host` then `curl localhost:3001/api/openapi`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use creapic_core::Creapic;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::ServiceBuilder;
use creapic_server_kit::media::{MediaStore, SigningKey};
use creapic_server_kit::pipeline::Pipeline;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let creapic = ServiceBuilder::new(core, pipeline).build();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}/api/openapi", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(creapic.clone());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                eprintln!("connection error: {e}");
            }
        });
    }
}
