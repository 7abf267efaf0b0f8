//! The command line: flags exactly as documented in the README, parsed by clap, and the one
//! error type every command returns (message, optional hint, exit code).

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// A command's failure, for people.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// 1 for failures, 2 for bad arguments.
    pub exit_code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            exit_code: 1,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            exit_code: 2,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<creapic_core::Error> for CliError {
    fn from(e: creapic_core::Error) -> Self {
        let exit = if matches!(
            e,
            creapic_core::Error::Invalid { .. } | creapic_core::Error::LimitExceeded { .. }
        ) {
            2
        } else {
            1
        };
        let hint = match e.code() {
            "store_unavailable" => {
                Some("is the database reachable? (--database / --data-dir)".to_owned())
            }
            _ => None,
        };
        CliError {
            message: format!("{e} [{}]", e.code()),
            hint,
            exit_code: exit,
        }
    }
}

impl From<creapic_server_kit::Error> for CliError {
    fn from(e: creapic_server_kit::Error) -> Self {
        CliError::new(format!("{e} [{}]", e.code()))
    }
}

impl From<creapic_server_kit::generation::Error> for CliError {
    fn from(e: creapic_server_kit::generation::Error) -> Self {
        CliError::new(format!("{e} [{}]", e.code()))
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// creapic: a metered AI-media API secured by organization-scoped API keys.
#[derive(Debug, Parser)]
#[command(name = "creapic", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How the integrator's commands reach a running server (`generate`, `bulk`, `render`, `job`,
/// `image`, `balance`, `usage`): flags, else the environment an integration uses.
#[derive(Debug, Args, Clone, Default)]
pub struct ApiArgs {
    /// The API key (default: AI_MEDIA_MAKER_API_KEY, else CREAPIC_API_KEY). A flag is visible
    /// to other users of the machine in the process list: prefer the environment variable.
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        help_heading = "Client commands"
    )]
    pub api_key: Option<String>,
    /// The server's base URL (default: CREAPIC_BASE_URL, else http://127.0.0.1:8080).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Client commands"
    )]
    pub base_url: Option<String>,
}

/// The data directory when none is given.
pub const DEFAULT_DATA_DIR: &str = "./creapic-data";

/// Where the data lives.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The data directory: SQLite database, media, signing key.
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_DATA_DIR,
        env = "CREAPIC_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// A database URL instead of the data directory's SQLite file (`postgres://…`, `sqlite://…`).
    #[arg(long, global = true, env = "CREAPIC_DATABASE_URL")]
    pub database: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server (and its job runner).
    Serve(ServeArgs),
    /// People who sign in to the console: create one with a password, or change a password.
    #[command(subcommand)]
    User(UserCommand),
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Members of an organization (the operator: role rules do not apply, the last owner stays).
    #[command(subcommand)]
    Member(MemberCommand),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Credits (tokens).
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// The audit log.
    Audit(AuditArgs),
    /// Copy the SQLite database to FILE, consistently, while `serve` runs and writes
    /// (PostgreSQL: use pg_dump, see docs/operations.md).
    Backup(BackupArgs),
    /// Check a backup (schema, audit chain, every ledger against its balance), then install it as
    /// the database; refused while a server uses the data directory.
    Restore(RestoreArgs),
    /// Generate one image through a running server (reads AI_MEDIA_MAKER_API_KEY, CREAPIC_BASE_URL).
    Generate(GenerateArgs),
    /// Start a bulk image job through a running server.
    Bulk(BulkArgs),
    /// Bulk jobs and renders through a running server: list them, a job's status, cancel one.
    #[command(subcommand)]
    Job(JobCommand),
    /// Render a scene through a running server: a background from text (layers: use the API).
    Render(RenderArgs),
    /// A generation through a running server, by its id (`generation.id`).
    #[command(subcommand)]
    Image(ImageCommand),
    /// The API key's organization's tokens through a running server: balance and held.
    Balance(BalanceArgs),
    /// Tokens spent, granted and released per UTC day, through a running server.
    Usage(UsageArgs),
    /// Print a shell completion script: `creapic completions bash > /etc/bash_completion.d/creapic`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the OpenAPI document `serve` serves at /api/openapi (the committed
    /// docs/openapi.json), without starting a server or opening a database.
    Openapi,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderChoice {
    /// The offline renderer (no network, no account): deterministic images, not a model.
    Offline,
    /// Google Gemini (needs GEMINI_API_KEY).
    Gemini,
    /// An OpenAI-compatible images API (OPENAI_API_KEY, OPENAI_BASE_URL).
    Openai,
}

/// How `creapic serve` writes its log (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, `name=value` fields, for people.
    Text,
    /// One JSON object per line (time, level, target, message, and the request span's fields:
    /// request id, method, path, route, key prefix, organization, status, latency), for log
    /// collectors.
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CREAPIC_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Log format: text for people, json for log collectors (one object per line). Which
    /// events: RUST_LOG (default `info`: one access line per request, at info).
    #[arg(long, value_enum, default_value = "text", env = "CREAPIC_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Which provider serves live keys (test keys always use the offline renderer).
    #[arg(long, value_enum, default_value = "offline", env = "CREAPIC_PROVIDER")]
    pub provider: ProviderChoice,
    /// Media storage URL (`file:///path`, `s3://bucket/prefix`); default: the data directory.
    #[arg(long, env = "CREAPIC_MEDIA")]
    pub media: Option<String>,
    /// Most media one organization may hold, in MiB (generated images and staged scene
    /// layers); past it generations and renders are refused with 422. 0: unlimited.
    #[arg(long, env = "CREAPIC_MEDIA_QUOTA_MIB", default_value_t = 10 * 1024)]
    pub media_quota_mib: u64,
    /// The public base URL of this server, for absolute image links.
    #[arg(long, env = "CREAPIC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Take audit events' client IP from X-Forwarded-For, as appended by HOPS trusted proxies in
    /// front of this server (the HOPS-th entry from the right; the flag alone means 1). Only
    /// behind proxies that append to the header.
    #[arg(
        long,
        value_name = "HOPS",
        num_args = 0..=1,
        default_missing_value = "1",
        env = "CREAPIC_TRUST_FORWARDED_FOR",
        value_parser = clap::value_parser!(u8).range(1..=16)
    )]
    pub trust_forwarded_for: Option<u8>,
    /// Milliseconds a verified API key is trusted without asking the database again. Bounds how
    /// late a key deleted through another replica is refused on SQLite; on PostgreSQL the
    /// deletion arrives at once (LISTEN/NOTIFY) whatever this is.
    #[arg(
        long,
        value_name = "MS",
        env = "CREAPIC_KEY_CACHE_TTL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub key_cache_ttl_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, on this address only (never on the API
    /// address). Without it, no metrics are recorded.
    #[arg(long, value_name = "ADDR", env = "CREAPIC_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds a client has to send a complete request head; also how long an idle keep-alive
    /// connection stays open.
    #[arg(
        long,
        default_value_t = 10,
        env = "CREAPIC_HEADER_READ_TIMEOUT_SECS",
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request body, from the end of the request head.
    #[arg(
        long,
        default_value_t = 30,
        env = "CREAPIC_BODY_READ_TIMEOUT_SECS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub body_read_timeout_secs: u64,
    /// Seconds a request may take in all (default: the kit's deadline for a synchronous
    /// generation, 5 min, plus a minute; printed at start).
    #[arg(
        long,
        env = "CREAPIC_REQUEST_TIMEOUT_SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub request_timeout_secs: Option<u64>,
    /// Most client connections open at once; more wait in the listen backlog.
    #[arg(
        long,
        default_value_t = 1024,
        env = "CREAPIC_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u32).range(1..=65_536)
    )]
    pub max_connections: u32,
    /// On SIGTERM/SIGINT: seconds the job runner lets generations in flight finish before it
    /// hands every job back (it starts no new item once the signal arrives).
    #[arg(
        long,
        default_value_t = 20,
        env = "CREAPIC_SHUTDOWN_GRACE_SECS",
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub shutdown_grace_secs: u64,
    /// On SIGTERM/SIGINT: seconds open connections have to finish their requests before they
    /// are closed.
    #[arg(
        long,
        default_value_t = 20,
        env = "CREAPIC_SHUTDOWN_DRAIN_SECS",
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub shutdown_drain_secs: u64,
    /// The job runner's lease in seconds: how long a job stays with a runner that stopped
    /// without handing it back (a crash) before another may take it.
    #[arg(
        long,
        default_value_t = 60,
        env = "CREAPIC_RUNNER_LEASE_SECS",
        value_parser = clap::value_parser!(u64).range(5..=900)
    )]
    pub runner_lease_secs: u64,
    /// Generations this process's job runner keeps in flight at once, across organizations:
    /// set it to what the provider allows in parallel (bulk throughput is about this many
    /// images per provider latency).
    #[arg(
        long,
        value_name = "N",
        default_value_t = creapic_server_kit::generation::runner::RunnerConfig::default().concurrency_max,
        env = "CREAPIC_RUNNER_CONCURRENCY",
        value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from)
    )]
    pub runner_concurrency: usize,
    /// Of those, most for one organization: a large job never takes every slot from the others.
    #[arg(
        long,
        value_name = "N",
        default_value_t = creapic_server_kit::generation::runner::RunnerConfig::default().org_concurrency_max,
        env = "CREAPIC_RUNNER_ORG_CONCURRENCY",
        value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from)
    )]
    pub runner_org_concurrency: usize,
    /// Jobs this process's runner holds (leases) at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = creapic_server_kit::generation::runner::RunnerConfig::default().jobs_max,
        env = "CREAPIC_RUNNER_JOBS",
        value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from)
    )]
    pub runner_jobs: usize,
    /// Of those, most of one organization: an organization with a long queue leaves job slots
    /// free, so another's job starts as soon as it is submitted.
    #[arg(
        long,
        value_name = "N",
        default_value_t = creapic_server_kit::generation::runner::RunnerConfig::default().org_jobs_max,
        env = "CREAPIC_RUNNER_ORG_JOBS",
        value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from)
    )]
    pub runner_org_jobs: usize,
    /// Share rate limits between replicas through Redis (`redis://127.0.0.1:6379`).
    #[arg(long, env = "CREAPIC_REDIS_URL")]
    pub redis: Option<String>,
    /// Do not run a job runner in this process (run them elsewhere).
    #[arg(long, env = "CREAPIC_NO_RUNNER")]
    pub no_runner: bool,
    /// Development only: honour CREAPIC_DASHBOARD_TOKEN, a shared secret with which any request
    /// carrying it in `x-dashboard-token` acts as the person `x-dashboard-user` names on the
    /// dashboard JSON routes (/api/keys, /api/audit, /api/organizations…). Without this flag the
    /// variable is ignored; people sign in to the console at /console/login
    /// (`creapic user create --email E --password-stdin`).
    #[arg(long, env = "CREAPIC_DEV_DASHBOARD_TOKEN")]
    pub dev_dashboard_token: bool,
    /// Requests per second each API key may send, sustained.
    #[arg(long, default_value_t = 50, env = "CREAPIC_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: u32,
    /// Requests each API key may send at once above the sustained rate.
    #[arg(long, default_value_t = 100, env = "CREAPIC_RATE_LIMIT_BURST")]
    pub rate_limit_burst: u32,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a person who signs in to the console at /console/login, with a password read
    /// from stdin (`printf '%s' "$PASSWORD" | creapic user create --email E --password-stdin`),
    /// optionally adding them to an organization.
    Create {
        /// Their e-mail: what they sign in with.
        #[arg(long)]
        email: String,
        /// Read the password (10 characters or more) from stdin; it never goes on the command line.
        #[arg(long)]
        password_stdin: bool,
        /// An organization id to add them to.
        #[arg(long)]
        org: Option<String>,
        /// Their role in --org: owner, admin or member.
        #[arg(long, default_value = "member", requires = "org")]
        role: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a person's password (read from stdin); every console session of theirs ends.
    Password {
        /// Their e-mail.
        #[arg(long)]
        email: String,
        /// Read the new password from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// The owner's e-mail (created if new).
        #[arg(long, default_value = "owner@localhost")]
        owner: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a user's organizations with their role in each.
    List {
        /// The user's e-mail.
        #[arg(long, default_value = "owner@localhost")]
        user: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List an organization's members.
    List {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a person (created if new) to an organization.
    Add {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// Their e-mail.
        #[arg(long)]
        email: String,
        /// owner, admin or member.
        #[arg(long)]
        role: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a member's role (the last owner cannot be demoted).
    Role {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// The member's e-mail.
        #[arg(long)]
        email: String,
        /// owner, admin or member.
        #[arg(long)]
        role: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (the last owner cannot be removed; the user and their keys stay).
    Remove {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// The member's e-mail.
        #[arg(long)]
        email: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its plaintext is printed once.
    Create {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// A descriptive name.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: IMAGE_GENERATION, SCENE_RENDER, ORGANIZATION_WRITE.
        #[arg(long)]
        scopes: String,
        /// A test-mode key (`wi_test_…`, always the offline renderer).
        #[arg(long)]
        test: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List an organization's keys (never the keys themselves).
    List {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// Include deleted keys.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key: immediately, for good (the record stays for audit).
    Delete {
        /// The key id.
        key_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Add credits.
    Grant {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// How many.
        #[arg(long)]
        amount: u64,
        /// Makes a retry safe (default: a fresh key).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the balance.
    Balance {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the ledger (oldest first).
    Ledger {
        /// The organization id.
        #[arg(long)]
        org: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AuditFormat {
    Json,
    Csv,
    Text,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// The organization id.
    #[arg(long)]
    pub org: Option<String>,
    /// Only events at or after this date (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: AuditFormat,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Delete audit events older than the retention (90 days) and expired idempotency records.
    Purge {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the audit log's hash chain: exit 0 if intact, 1 with the first broken seq if a row
    /// was edited or deleted. Record the printed head hash elsewhere to detect a full rewrite.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy; an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (a file `creapic backup` wrote).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Replace the database already there (its current contents are lost).
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to draw (raw text; the server turns it into a JSON prompt).
    pub text: String,
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.
    #[arg(long, default_value = "1:1")]
    pub aspect_ratio: String,
    /// Quality: standard or hd.
    #[arg(long, default_value = "standard")]
    pub quality: String,
    /// Save the image here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the response as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List the organization's bulk jobs and renders, oldest first.
    List(JobListArgs),
    /// Show a job's status and images.
    Status(JobArgs),
    /// Cancel a job: items not started are never started, their credits come back.
    Cancel(JobArgs),
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job id printed by `creapic bulk`.
    pub job_id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobListArgs {
    /// Show at most this many (following pages as needed).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The background to draw (raw text; the server turns it into a JSON prompt).
    pub text: String,
    /// Aspect ratio: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.
    #[arg(long, default_value = "1:1")]
    pub aspect_ratio: String,
    /// Quality: standard or hd.
    #[arg(long, default_value = "standard")]
    pub quality: String,
    /// Wait for the render to finish.
    #[arg(long)]
    pub wait: bool,
    /// Save the image here (implies --wait).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show a generation: status, prompt, tokens, and a fresh link to its image.
    Get {
        /// The generation id.
        id: String,
        /// Save the image here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Also list the ledger, oldest first (at most 1,000 entries).
    #[arg(long)]
    pub ledger: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The first day, YYYY-MM-DD (default: 29 days before --to).
    #[arg(long)]
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BulkArgs {
    /// The prompts (1–100).
    #[arg(required = true)]
    pub prompts: Vec<String>,
    /// Wait for the job, with a progress bar.
    #[arg(long)]
    pub wait: bool,
    /// Save the images into this directory (implies --wait).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one command.
pub async fn run(cli: Cli) -> CliResult {
    // Everything the store commands create in the data directory is private to this user; the
    // client commands write the user's own files and keep the user's umask.
    if !matches!(
        cli.command,
        Command::Generate(_)
            | Command::Bulk(_)
            | Command::Job(_)
            | Command::Render(_)
            | Command::Image(_)
            | Command::Balance(_)
            | Command::Usage(_)
            | Command::Completions { .. }
            | Command::Openapi
    ) {
        crate::data_dir::restrict_umask();
    }
    let api = cli.api;
    match cli.command {
        Command::Serve(args) => crate::serve::run(&cli.store, args).await,
        Command::User(cmd) => crate::admin::user(&cli.store, cmd).await,
        Command::Org(cmd) => crate::admin::org(&cli.store, cmd).await,
        Command::Member(cmd) => crate::admin::member(&cli.store, cmd).await,
        Command::Key(cmd) => crate::admin::key(&cli.store, cmd).await,
        Command::Credits(cmd) => crate::admin::credits(&cli.store, cmd).await,
        Command::Audit(args) => crate::admin::audit(&cli.store, args).await,
        Command::Backup(args) => crate::backup::backup(&cli.store, args).await,
        Command::Restore(args) => crate::backup::restore(&cli.store, args).await,
        Command::Generate(args) => crate::integrator::generate(&api, args).await,
        Command::Bulk(args) => crate::integrator::bulk(&api, args).await,
        Command::Job(cmd) => crate::integrator::job(&api, cmd).await,
        Command::Render(args) => crate::integrator::render(&api, args).await,
        Command::Image(cmd) => crate::integrator::image(&api, cmd).await,
        Command::Balance(args) => crate::integrator::balance(&api, args).await,
        Command::Usage(args) => crate::integrator::usage(&api, args).await,
        Command::Completions { shell } => completions(shell),
        Command::Openapi => {
            openapi();
            Ok(())
        }
    }
}

/// `creapic completions SHELL`: the completion script for every command and flag, on stdout.
/// Generated into memory first (clap_complete panics on a failed write), then written: a closed
/// pipe (`| head`) ends the command quietly.
fn completions(shell: clap_complete::Shell) -> CliResult {
    use std::io::Write;
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "creapic", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(format!(
            "could not write the completion script: {e}"
        ))),
        _ => Ok(()),
    }
}

/// `creapic openapi`: the document for `serve`'s limits, which are the kit's defaults (no flag
/// changes them), as the canonical text of `docs/openapi.json`.
fn openapi() {
    let limits = creapic_server_kit::KitConfig::default().limits;
    print!(
        "{}",
        creapic_server_kit::http::reference::document_text(&limits)
    );
}
