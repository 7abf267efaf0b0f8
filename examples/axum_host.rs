//! Mounting creapic in an axum application: the kit is one `tower::Service`, so it goes under a
//! prefix with `Router::nest_service` (or at the root with `fallback_service`) next to the
//! host's own routes. Three things make the host keep every promise `creapic serve` keeps:
//!
//! - `Upkeep::for_service(..).start()`: the job runner (bulk jobs and scene renders run), the
//!   last-used flush, the 90-day audit and idempotency purges, the sweep of abandoned holds and
//!   of stale uploads; `UpkeepHandle::shutdown` at the end hands jobs back and flushes.
//! - serving with `into_make_service_with_connect_info::<SocketAddr>()`: the kit reads the
//!   client's address from axum's `ConnectInfo` (or from `creapic_server_kit::PeerAddr`, which
//!   any host can insert), so key changes are audited with the IP and failed authentications
//!   are limited per address.
//! - nothing for links: under `/creapic` the kit's image links are `/creapic/api/media/…`
//!   (it finds the prefix from axum's `OriginalUri`); set `KitConfig::public_url` for absolute
//!   links or when a proxy rewrites paths.
//!
//! The host's login layer is where a dashboard user would be put into the request extensions
//! (`creapic_server_kit::http::auth::DashboardUser`) for the key-management routes.
//!
//! Run: `cargo run --example axum_host` then `curl localhost:3000/creapic/api/openapi`.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use creapic_core::Creapic;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::ServiceBuilder;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::upkeep::{Upkeep, UpkeepHandle};

/// How long shutdown lets generations in flight finish before handing their jobs back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The host's application: its own page, creapic under `/creapic`, and the kit's background
/// work (the caller shuts it down when the server stops).
pub(crate) fn app(
    core: Arc<Creapic<dyn Store>>,
    pipeline: Pipeline,
) -> Result<(Router, UpkeepHandle), creapic_server_kit::Error> {
    let creapic = ServiceBuilder::new(core, pipeline).build();
    let upkeep = Upkeep::for_service(creapic.state()).start()?;
    let app = Router::new()
        .route("/", get(|| async { "the host's own page" }))
        // Requests to /creapic/api/... reach the kit as /api/...
        .nest_service("/creapic", creapic);
    Ok((app, upkeep))
}

/// Serves `app` on `listener` with each connection's address (`ConnectInfo`) until `stop`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Arc::new(Creapic::new(store));
    let pipeline = Pipeline::offline(MediaStore::in_memory(SigningKey::generate()));
    let (app, upkeep) = app(core, pipeline)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://{}/creapic/api/openapi",
        listener.local_addr()?
    );
    serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    upkeep.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}
