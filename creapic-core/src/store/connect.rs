//! Opening a store from a URL: the one entry point hosts (the server, the CLI) call.
//!
//! Design decision: the URL scheme alone picks the backend (`sqlite://path`, `postgres://…`,
//! `memory:`), and every backend takes the same [`ConnectOptions`], so a host switches backends
//! by configuration and never by code. A backend that was not compiled in is an `Invalid` error
//! naming the missing cargo feature, not a panic.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::Store;

/// How a SQL store connects. Every field has a bounded default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Apply the embedded migrations on connect (default `true`). A host that migrates in a
    /// separate deployment step turns it off; the store then expects the schema to be current.
    pub migrate: bool,
    /// Most connections in the pool (default 16). SQLite: readers; writes always go through one
    /// writer connection per process.
    pub max_connections: u32,
    /// Longest wait for a pooled connection, including connecting (default 5 s). Past it a call
    /// fails with `Store { kind: Unavailable }`.
    pub acquire_timeout: Duration,
    /// PostgreSQL: longest a statement may run before the server cancels it (default 30 s);
    /// `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
    /// SQLite: longest a write waits for another process's write lock (default 5 s).
    pub busy_timeout: Duration,
    /// PostgreSQL: the schema to use (created if missing, then first on the `search_path`).
    /// `None` uses the server's default `search_path`. Must be a plain lowercase identifier.
    pub schema: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            migrate: true,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            busy_timeout: Duration::from_secs(5),
            schema: None,
        }
    }
}

impl ConnectOptions {
    /// Whether to apply migrations on connect.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The pool size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The longest wait for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The PostgreSQL statement timeout.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The SQLite busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The PostgreSQL schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

/// Opens the store `url` names: `sqlite://path/to/file.db` (created if missing), `sqlite::memory:`,
/// `postgres://user@host:port/db` (or `postgresql://`), or `memory:` for the in-memory store.
/// Migrations are applied unless `options.migrate` is off.
pub async fn connect(url: &str, options: ConnectOptions) -> Result<Arc<dyn Store>> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => {
            let _ = options;
            Ok(Arc::new(crate::store::memory::MemoryStore::new()))
        }
        "sqlite" => connect_sqlite(url, &options).await,
        "postgres" | "postgresql" => connect_postgres(url, &options).await,
        _ => Err(Error::invalid(
            "store url",
            "expected a sqlite://, postgres:// or memory: URL",
        )),
    }
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        crate::store::sqlite::SqliteStore::connect(url, options).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(_url: &str, _options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    Err(Error::invalid(
        "store url",
        "creapic-core was built without the `sqlite` feature",
    ))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        crate::store::postgres::PgStore::connect(url, options).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_url: &str, _options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    Err(Error::invalid(
        "store url",
        "creapic-core was built without the `postgres` feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_invalid() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for url in ["mysql://x", "", "file:/tmp/x"] {
            let r = rt.block_on(connect(url, ConnectOptions::default()));
            assert!(matches!(r, Err(Error::Invalid { .. })), "{url}");
        }
        assert!(
            rt.block_on(connect("memory:", ConnectOptions::default()))
                .is_ok()
        );
    }
}
