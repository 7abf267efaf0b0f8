//! `creapic serve`: the reference host. Mounts the server kit on axum with the store, media
//! storage and the generation pipeline, starts the kit's background work with one call
//! (`creapic_server_kit::upkeep::Upkeep`: the job runner, the last-used flush, the retention
//! purges, the sweeps of abandoned holds and stale uploads, the metrics recorder's upkeep), and
//! on PostgreSQL listens for key revocations made by other replicas.
//!
//! Shutdown on SIGINT/SIGTERM is graceful and bounded: stop accepting, let open connections
//! finish their requests for `--shutdown-drain-secs` (then close them), let the runner's
//! generations in flight finish for `--shutdown-grace-secs` and hand every job back (a restart,
//! or another replica, resumes it at once), flush last-used times, exit. Both run at once.
//!
//! Metrics are served only on `--metrics-listen`, never on the API address.
//!
//! The kit's web console is served at `/console` with the kit's own sign-in (people created
//! with `creapic user create`). The old stand-in login, `CREAPIC_DASHBOARD_TOKEN`, is honoured
//! only with `--dev-dashboard-token`: it lets anyone holding one shared secret act as anyone.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use creapic_core::Creapic;
use creapic_core::store::postgres::PgStore;
use creapic_core::store::{ConnectOptions, Store};
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;
use creapic_server_kit::generation::prompt::{PromptComposer, RuleComposer};
use creapic_server_kit::generation::provider::{ImageProvider, ProviderConfig};
use creapic_server_kit::generation::runner::RunnerConfig;
use creapic_server_kit::log_writer::{LogFlush, LogWriter};
use creapic_server_kit::upkeep::{Upkeep, UpkeepConfig};
use creapic_server_kit::{KitConfig, Limits, ServiceBuilder, TrustedProxies};

use crate::banner::Banner;
use crate::cli::{CliError, CliResult, LogFormat, ProviderChoice, ServeArgs, StoreArgs};
use crate::connections::ConnectionLimits;

/// Time allowed beyond the kit's generation deadline for answering after it.
const REQUEST_MARGIN: Duration = Duration::from_secs(60);
/// The shortest default request deadline.
const REQUEST_TIMEOUT_MIN: Duration = Duration::from_secs(120);

/// The log on stderr, in `format`, filtered by `RUST_LOG` (default `info`). JSON lines carry the
/// current span (the request's: its id, method, path, route, key prefix, organization, status,
/// latency) under `span`, and the event's own fields at the top level.
///
/// Design decision: **requests format their line, a thread writes the lines in batches**
/// ([`LogWriter`]): a line costs the request a copy into a shared buffer, not a system call,
/// and reaches stderr within 50 ms. The returned guard writes what is left when dropped: hold
/// it until the server has stopped. An error: the writer thread could not start.
pub fn init_tracing(format: LogFormat) -> std::io::Result<LogFlush> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = LogWriter::stderr()?;
    if format == LogFormat::Json {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init();
        return Ok(guard);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        // Fields as plain `name=value`: the default formatter styles every field name (even
        // with colours off), which costs more than the rest of the request span.
        .fmt_fields(tracing_subscriber::field::MakeExt::delimited(
            tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                if field.name() == "message" {
                    write!(w, "{value:?}")
                } else {
                    write!(w, "{field}={value:?}")
                }
            }),
            " ",
        ))
        .try_init();
    Ok(guard)
}

/// The media signing key: `CREAPIC_MEDIA_SIGNING_KEY` (hex; give every replica the same one) or
/// a key generated once into the data directory (mode 0600).
fn signing_key(data_dir: &Path) -> CliResult<SigningKey> {
    if let Ok(hex_key) = std::env::var("CREAPIC_MEDIA_SIGNING_KEY") {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| CliError::usage("CREAPIC_MEDIA_SIGNING_KEY must be hex"))?;
        return SigningKey::new(bytes).map_err(CliError::from);
    }
    let path = data_dir.join("media-signing.key");
    if path.exists() {
        crate::data_dir::check_private(&path)?;
    }
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex::decode(text.trim())
            .map_err(|_| CliError::new(format!("{} is not a hex key", path.display())))?;
        return SigningKey::new(bytes).map_err(CliError::from);
    }
    crate::data_dir::create(data_dir)?;
    let mut bytes = [0u8; 32];
    creapic_core::random::RandomSource::fill(&creapic_core::random::OsRandom, &mut bytes);
    write_private(&path, &hex::encode(bytes))?;
    SigningKey::new(bytes.to_vec()).map_err(CliError::from)
}

fn write_private(path: &Path, text: &str) -> CliResult {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

fn providers(
    choice: ProviderChoice,
) -> CliResult<(Arc<dyn PromptComposer>, Arc<dyn ImageProvider>)> {
    let hint = |e: creapic_server_kit::generation::Error| {
        CliError::from(e).hint("set the provider's API key variable, or use --provider offline")
    };
    Ok(match choice {
        ProviderChoice::Offline => (Arc::new(RuleComposer), ProviderConfig::default().build()?),
        ProviderChoice::Gemini => {
            let config = creapic_server_kit::generation::provider::gemini::GeminiConfig::from_env()
                .map_err(hint)?;
            let composer =
                creapic_server_kit::generation::prompt::GeminiComposer::new(config.clone())
                    .map_err(hint)?;
            (Arc::new(composer), ProviderConfig::Gemini(config).build()?)
        }
        ProviderChoice::Openai => {
            let config = creapic_server_kit::generation::provider::openai::OpenAiConfig::from_env()
                .map_err(hint)?;
            (
                Arc::new(RuleComposer),
                ProviderConfig::OpenAi(config).build()?,
            )
        }
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal sent right after the server printed its address is a
/// graceful stop, never the default action (death).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = term => {},
                () = int => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn run(store_args: &StoreArgs, args: ServeArgs) -> CliResult {
    let url = crate::admin::database_url(store_args)?;
    // Held until the process ends: `creapic restore` refuses while a server uses the file.
    let _serve_lock = crate::backup::ServeLock::shared(store_args)?;
    // PostgreSQL gets its typed store so other replicas' key deletions reach this cache at once.
    let (store, pg): (Arc<dyn Store>, Option<PgStore>) = if url.starts_with("postgres") {
        let pg = PgStore::connect(&url, &ConnectOptions::default()).await?;
        (Arc::new(pg.clone()), Some(pg))
    } else {
        (
            creapic_core::store::connect(&url, ConnectOptions::default()).await?,
            None,
        )
    };
    let mut core_config = creapic_core::CoreConfig::default();
    core_config.auth.cache_ttl = Duration::from_millis(args.key_cache_ttl_ms);
    let core: Arc<Creapic<dyn Store>> =
        Arc::new(Creapic::builder(store).config(core_config).build());
    let _revocations = match &pg {
        Some(pg) => Some(pg.spawn_revocation_listener_for(Arc::clone(&core)).await?),
        None => None,
    };

    let signing = signing_key(&store_args.data_dir)?;
    let media = match &args.media {
        Some(media_url) => {
            let options: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k.to_lowercase(), v))
                .collect();
            MediaStore::from_url(media_url, options, signing)?
        }
        None => MediaStore::local(store_args.data_dir.join("media"), signing)?,
    };
    let media = match args.media_quota_mib {
        0 => media,
        mib => media.with_quota(mib.saturating_mul(1024 * 1024)),
    };
    let (composer, live) = providers(args.provider)?;
    let pipeline = Pipeline::new(composer, live, media);

    let limits = ConnectionLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
        request_timeout: match args.request_timeout_secs {
            Some(secs) => Duration::from_secs(secs),
            None => default_request_timeout(&KitConfig::default().limits),
        },
        drain: Duration::from_secs(args.shutdown_drain_secs),
    };
    // Metrics are recorded only when someone can read them, on their own address.
    let metrics = match args.metrics_listen {
        Some(metrics_addr) => {
            // Histograms with the kit's buckets (`creapic_server_kit::telemetry`), not summaries.
            let handle = creapic_server_kit::telemetry::prometheus_builder()
                .and_then(|b| b.install_recorder())
                .map_err(|e| CliError::new(format!("cannot install the metrics recorder: {e}")))?;
            let listener = bind(metrics_addr).await?;
            Some((handle, listener))
        }
        None => None,
    };
    let listener = bind(args.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(format!("no local address: {e}")))?;
    // Absolute image links by default, so `imageUrl` opens as it is.
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let console_root = public_url.clone();
    let config = KitConfig {
        public_url: Some(public_url),
        trust_forwarded_for: args
            .trust_forwarded_for
            .map_or(TrustedProxies::NONE, TrustedProxies::hops),
        rate_limit: creapic_server_kit::RateLimitConfig {
            per_second: args.rate_limit_per_second,
            burst: args.rate_limit_burst,
        },
        ..KitConfig::default()
    };
    let mut builder = ServiceBuilder::new(Arc::clone(&core), pipeline).config(config.clone());
    if let Some((handle, _)) = &metrics {
        builder = builder.metrics(handle.clone());
    }
    #[cfg(feature = "redis")]
    if let Some(redis_url) = &args.redis {
        let limiter = creapic_server_kit::http::rate_limit::RedisLimiter::connect(
            redis_url,
            "creapic:rl",
            config.rate_limit,
        )
        .await?;
        builder = builder.rate_limiter(Arc::new(limiter));
    }
    #[cfg(not(feature = "redis"))]
    if args.redis.is_some() {
        return Err(CliError::usage(
            "--redis needs the binary built with the `redis` feature",
        ));
    }
    if args.dev_dashboard_token && std::env::var("CREAPIC_DASHBOARD_TOKEN").is_err() {
        return Err(CliError::usage(
            "--dev-dashboard-token needs CREAPIC_DASHBOARD_TOKEN set to the shared secret",
        ));
    }
    let service = builder.build();

    // Every background task the kit's promises need, with the periods' defaults; the runner
    // wakes on the service's job signal and the recorder (when metrics are on: it keeps every
    // histogram sample until its upkeep folds them in) is the service's. No task of ours holds
    // a clone of the handle, so shutdown always gets it back.
    let lease = Duration::from_secs(args.runner_lease_secs);
    let upkeep_config = UpkeepConfig {
        runner: (!args.no_runner).then(|| RunnerConfig {
            lease,
            heartbeat: lease / 3,
            concurrency_max: args.runner_concurrency,
            org_concurrency_max: args.runner_org_concurrency.min(args.runner_concurrency),
            jobs_max: args.runner_jobs,
            org_jobs_max: args.runner_org_jobs,
            ..RunnerConfig::default()
        }),
        ..UpkeepConfig::default()
    };
    let mut upkeep = Upkeep::for_service(service.state())
        .config(upkeep_config)
        .start()?;

    let provider = match args.provider {
        ProviderChoice::Offline => "the offline renderer (deterministic images, not a model)",
        ProviderChoice::Gemini => "Gemini",
        ProviderChoice::Openai => "an OpenAI-compatible API",
    };
    let signals = shutdown_signal();
    let metrics_addr = match metrics.as_ref().map(|(_, l)| l.local_addr()) {
        Some(Ok(metrics_addr)) => Some(metrics_addr),
        Some(Err(e)) => return Err(CliError::new(format!("no metrics address: {e}"))),
        None => None,
    };
    let mut warnings = Vec::new();
    let router = service.into_router();
    let dev_token = std::env::var("CREAPIC_DASHBOARD_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let router = match (args.dev_dashboard_token, dev_token) {
        (true, Some(token)) => {
            warnings.push(
                "dev dashboard routes (/api/keys, /api/audit) accept x-dashboard-token + x-dashboard-user (--dev-dashboard-token: never in production)"
                    .to_owned(),
            );
            router.layer(axum::middleware::from_fn_with_state(
                DashboardLogin {
                    token: Arc::new(token.into_bytes()),
                    core: Arc::clone(&core),
                },
                dashboard_login,
            ))
        }
        (false, Some(_)) => {
            warnings.push(
                "CREAPIC_DASHBOARD_TOKEN is ignored without --dev-dashboard-token (development only)"
                    .to_owned(),
            );
            router
        }
        (_, None) => router,
    };
    // The hints name the same store as this server: a non-default data directory or a
    // database URL (its password replaced by a placeholder) is part of every command.
    let creapic = command_prefix(store_args);
    Banner {
        addr,
        store: redact(&url),
        provider,
        console: format!("{}/console/login", console_root.trim_end_matches('/')),
        metrics: metrics_addr,
        limits: format!(
            "{} connections; head {} s, body {} s, request {} s; shutdown: jobs {} s, connections {} s",
            limits.max_connections,
            limits.header_read_timeout.as_secs(),
            limits.body_read_timeout.as_secs(),
            limits.request_timeout.as_secs(),
            args.shutdown_grace_secs,
            limits.drain.as_secs(),
        ),
        runner: if args.no_runner {
            "off (--no-runner: jobs run on the replicas that run one)".to_owned()
        } else {
            format!(
                "{} generations at once, {} per organization, {} jobs leased ({} per organization), lease {} s",
                args.runner_concurrency,
                args.runner_org_concurrency.min(args.runner_concurrency),
                args.runner_jobs,
                args.runner_org_jobs.min(args.runner_jobs),
                args.runner_lease_secs,
            )
        },
        warnings,
        hints: vec![
            format!("{creapic} org create --name \"My org\""),
            format!(
                "printf '%s' \"$PASSWORD\" | {creapic} user create --email you@example.com --password-stdin --org ORG_ID --role owner"
            ),
            "(then sign in to the console and add a key there, or:)".to_owned(),
            format!("{creapic} credits grant --org ORG_ID --amount 100"),
            format!(
                "{creapic} key create --org ORG_ID --name dev --scopes IMAGE_GENERATION,SCENE_RENDER,ORGANIZATION_WRITE"
            ),
            format!(
                "AI_MEDIA_MAKER_API_KEY=wi_live_… CREAPIC_BASE_URL=http://{addr} creapic generate \"a lighthouse at dusk\" --out lighthouse.png"
            ),
        ],
    }
    .print(args.log_format);

    // One signal, three listeners of it: the API's connections, the metrics' and the runner.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        signals.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let api = crate::connections::serve(listener, router, limits, stopped(stop_rx.clone()));
    let metrics_server = async {
        if let Some((handle, listener)) = metrics {
            let router = creapic_server_kit::http::routes::metrics_router(handle);
            crate::connections::serve(listener, router, limits, stopped(stop_rx.clone())).await;
        }
    };
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    // Jobs are handed back while connections drain; the periodic tasks and the final last-used
    // flush stop after both, so the flush sees the last requests.
    let runner_stop = async {
        stopped(stop_rx.clone()).await;
        upkeep.stop_runner(grace).await;
    };
    tokio::join!(api, metrics_server, runner_stop);
    signal.abort();
    upkeep.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves when the shutdown signal has been given (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr) -> CliResult<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::new(format!("cannot listen on {addr}: {e}"))
            .hint("is another server using that port? try 127.0.0.1:0")
    })
}

/// The default request deadline: above the longest request the kit itself lets run, so it
/// never cuts work the kit would still finish and fires only for something stuck past the
/// kit's own bounds. The longest request is a synchronous generation — compose, draw with up to
/// 3 provider attempts (each up to the adapter's 120 s timeout plus its waits on 429s: a remote
/// worst case of ~21 minutes, twice that when Gemini also composes) — which the kit cuts at
/// `Limits::generation_timeout` (5 min by default) with a 504 whose hold is released.
/// [`REQUEST_MARGIN`] more covers answering after that deadline: 6 min by default.
fn default_request_timeout(limits: &Limits) -> Duration {
    (limits.generation_timeout + REQUEST_MARGIN).max(REQUEST_TIMEOUT_MIN)
}

/// The reference host's development stand-in for a login layer (`--dev-dashboard-token`): with
/// `CREAPIC_DASHBOARD_TOKEN` set, a
/// request carrying that token in `x-dashboard-token` (compared in constant time) acts as the
/// existing user named by `x-dashboard-user` (an e-mail) on the dashboard routes. A real host
/// puts its own session's user into the request extensions the same way.
#[derive(Clone)]
struct DashboardLogin {
    token: Arc<Vec<u8>>,
    core: Arc<Creapic<dyn Store>>,
}

async fn dashboard_login(
    axum::extract::State(login): axum::extract::State<DashboardLogin>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use subtle::ConstantTimeEq as _;
    let presented = request
        .headers()
        .get("x-dashboard-token")
        .map(|v| v.as_bytes().to_vec());
    let email = request
        .headers()
        .get("x-dashboard-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| creapic_core::org::Email::new(v).ok());
    if let (Some(presented), Some(email)) = (presented, email) {
        let token_ok: bool = presented.ct_eq(login.token.as_slice()).into();
        if token_ok && let Ok(Some(user)) = login.core.store().user_by_email(&email).await {
            request
                .extensions_mut()
                .insert(creapic_server_kit::http::auth::DashboardUser(user.id));
        }
    }
    next.run(request).await
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `creapic` with the options that choose this server's store, for the start-up hints: the data
/// directory unless it is the default, the database URL when one is set (with `PASSWORD` in
/// place of its password, which a log must not show). Values are single-quoted for a shell.
fn command_prefix(store: &StoreArgs) -> String {
    let quote = |v: &str| {
        if v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@".contains(&b))
        {
            v.to_owned()
        } else {
            format!("'{}'", v.replace('\'', "'\\''"))
        }
    };
    let mut command = String::from("creapic");
    if store.data_dir != std::path::Path::new(crate::cli::DEFAULT_DATA_DIR) {
        command.push_str(" --data-dir ");
        command.push_str(&quote(&store.data_dir.display().to_string()));
    }
    if let Some(url) = &store.database {
        let shown = match url::Url::parse(url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("PASSWORD"));
                parsed.to_string()
            }
            _ => url.clone(),
        };
        command.push_str(" --database ");
        command.push_str(&quote(&shown));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_servers_store() {
        let store = |dir: &str, db: Option<&str>| StoreArgs {
            data_dir: dir.into(),
            database: db.map(str::to_owned),
        };
        assert_eq!(command_prefix(&store("./creapic-data", None)), "creapic");
        assert_eq!(
            command_prefix(&store("/srv/my data", None)),
            "creapic --data-dir '/srv/my data'"
        );
        assert_eq!(
            command_prefix(&store(
                "./creapic-data",
                Some("postgres://app:s3cret@db:5432/creapic")
            )),
            "creapic --database postgres://app:PASSWORD@db:5432/creapic"
        );
    }
}
