//! What `creapic serve` says when it starts: where it listens, what it runs on, and (for people)
//! the first commands to try — as text lines for a terminal, or as log events for a collector.
//!
//! Design decision: **in JSON mode stderr is JSON only.** A collector parses every line of the
//! log; a human banner before the first JSON line would be a parse error on each start. So with
//! `--log-format json` the facts become one `info` event (`message: "listening"`, target
//! `creapic::serve`, one field per fact), warnings become `warn` events, and the first-steps
//! hints (for people at a terminal) are left out.

use std::net::SocketAddr;

use crate::cli::LogFormat;

/// Where the server's `listening` event goes (`RUST_LOG=creapic::serve=…` selects it).
const TARGET: &str = "creapic::serve";

/// The facts of a started server.
#[derive(Debug)]
pub struct Banner {
    /// The API's address.
    pub addr: SocketAddr,
    /// The store's URL, its password masked.
    pub store: String,
    /// What generates images for live keys.
    pub provider: &'static str,
    /// The console's sign-in page.
    pub console: String,
    /// The metrics' address, when they are served.
    pub metrics: Option<SocketAddr>,
    /// Connection limits and shutdown deadlines, in a sentence.
    pub limits: String,
    /// The runner's slots, or why there is none, in a sentence.
    pub runner: String,
    /// Things the operator should know (development switches, ignored settings).
    pub warnings: Vec<String>,
    /// The first commands to try, one per line (text mode only).
    pub hints: Vec<String>,
}

impl Banner {
    /// Writes the banner to stderr in `format`.
    pub fn print(&self, format: LogFormat) {
        let addr = self.addr;
        match format {
            LogFormat::Json => {
                let metrics = self
                    .metrics
                    .map_or_else(|| "off".to_owned(), |m| format!("http://{m}/metrics"));
                tracing::info!(
                    target: TARGET,
                    address = %format_args!("http://{addr}"),
                    store = %self.store,
                    images = self.provider,
                    docs = %format_args!("http://{addr}/api/docs"),
                    console = %self.console,
                    metrics = %metrics,
                    limits = %self.limits,
                    runner = %self.runner,
                    "listening"
                );
                for warning in &self.warnings {
                    tracing::warn!(target: TARGET, "{warning}");
                }
            }
            LogFormat::Text => {
                eprintln!("creapic listening on http://{addr}");
                eprintln!("  store     {}", self.store);
                eprintln!(
                    "  images    live keys: {}; test keys: the offline renderer",
                    self.provider
                );
                eprintln!(
                    "  API docs  http://{addr}/api/docs (the document: http://{addr}/api/openapi)"
                );
                eprintln!("  console: {}", self.console);
                match self.metrics {
                    Some(m) => eprintln!("creapic metrics on http://{m}/metrics"),
                    None => eprintln!(
                        "  metrics   off (--metrics-listen ADDR serves them apart from the API)"
                    ),
                }
                eprintln!("  limits    {}", self.limits);
                eprintln!("  runner    {}", self.runner);
                for warning in &self.warnings {
                    eprintln!("  warning   {warning}");
                }
                if !self.hints.is_empty() {
                    eprintln!("first steps, from another terminal:");
                    for hint in &self.hints {
                        eprintln!("  {hint}");
                    }
                }
            }
        }
    }
}
