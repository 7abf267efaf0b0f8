//! Serving creapic with plain hyper, no axum in the host: the kit's `tower::Service` is adapted
//! with `hyper_util::service::TowerToHyperService` and served per connection. Its error type is
//! `Infallible`, so hyper never drops a connection because of a failed request: every failure
//! is a JSON response.
//!
//! What the host owes the kit, besides the connections: `Upkeep::for_service(..).start()` (the
//! job runner and the periodic tasks behind the API's promises; `UpkeepHandle::shutdown` at
//! the end), and each request's client address as a `creapic_server_kit::PeerAddr` extension
//! (audited with key changes, and the unit the failed-authentication budget counts). Served at
//! the root, image links (`/api/media/…`) need nothing; a host that strips a prefix itself sets
//! `KitConfig::public_url` to it (`/creapic`, or an absolute URL).
//!
//! Run: `cargo run --example hyper_host` then `curl localhost:3001/api/openapi`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use creapic_core::Creapic;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::upkeep::{Upkeep, UpkeepHandle};
use creapic_server_kit::{CreapicService, PeerAddr, ServiceBuilder};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

/// How long shutdown lets generations in flight finish before handing their jobs back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The kit's service and its background work (the caller shuts it down when the server stops).
pub(crate) fn service(
    core: Arc<Creapic<dyn Store>>,
    pipeline: Pipeline,
) -> Result<(CreapicService, UpkeepHandle), creapic_server_kit::Error> {
    let creapic = ServiceBuilder::new(core, pipeline).build();
    let upkeep = Upkeep::for_service(creapic.state()).start()?;
    Ok((creapic, upkeep))
}

/// Accepts connections on `listener` until `stop`, each served by hyper with the client's
/// address put into every request's extensions.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    creapic: CreapicService,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut stop => return Ok(()),
        };
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddr(remote));
                request
            })
            .service(creapic.clone());
        let service = TowerToHyperService::new(service);
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let (creapic, upkeep) = service(core, pipeline)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}/api/openapi", listener.local_addr()?);
    serve(listener, creapic, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    upkeep.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}
