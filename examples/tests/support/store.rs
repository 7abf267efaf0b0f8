//! The store a binary test runs on: a data directory (SQLite by default) and, for PostgreSQL, a
//! fresh database on the server of `DATABASE_URL`, dropped with its connections when the test
//! lets go of it; and the `creapic` commands run against it (organizations, people, `serve`).
//!
//! A fresh database rather than a schema: the binary takes a URL, and a URL names a database.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sqlx::Connection as _;

use super::{BIN, Serve, spawn_serve};

/// The password every person [`Store::person`] creates signs in with.
pub const PASSWORD: &str = "correct horse battery staple";

/// The PostgreSQL server's administrative URL (`DATABASE_URL`, else the local default).
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh database on the server of [`admin_url`]; dropped (`WITH (FORCE)`) on drop.
pub struct Database {
    /// Its name: `creapic_{what}_{uuid}`.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl Database {
    /// Creates `creapic_{what}_{uuid}` (`what`: lowercase letters and underscores). Fails
    /// rather than skips when PostgreSQL cannot be reached.
    pub async fn create(what: &str) -> Database {
        assert!(
            what.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{what}"
        );
        let name = format!("creapic_{what}_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is required: {e}", admin_url()));
        // The name is ours: lowercase letters, digits and underscores.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url();
        let (server, _) = base.rsplit_once('/').unwrap();
        Database {
            url: format!("{server}/{name}"),
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: drop may run outside (or at the end of) the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A new empty directory under the system's temporary directory, `creapic-{what}-{uuid}`.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("creapic-{what}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A data directory (removed on drop) and, for PostgreSQL, a fresh [`Database`].
pub struct Store {
    /// The `--data-dir`.
    pub dir: PathBuf,
    /// The database, when the store is PostgreSQL.
    pub database: Option<Database>,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Store {
    /// SQLite in a new data directory.
    pub fn sqlite() -> Store {
        Store {
            dir: temp_dir("store"),
            database: None,
        }
    }

    /// A fresh PostgreSQL database (and a data directory for everything else).
    pub async fn postgres() -> Store {
        Store {
            database: Some(Database::create("store").await),
            dir: temp_dir("store"),
        }
    }

    /// `creapic --data-dir DIR [--database URL]` with no database or dashboard token from
    /// the environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command.arg("--data-dir").arg(&self.dir);
        if let Some(db) = &self.database {
            command.arg("--database").arg(&db.url);
        }
        command
            .env_remove("CREAPIC_DATABASE_URL")
            .env_remove("CREAPIC_DASHBOARD_TOKEN");
        command
    }

    /// `creapic … ARGS…`, with `stdin` piped in.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.command();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// [`Store::run`], which must succeed and print one JSON document.
    pub fn json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A new organization (founded by founder@example.com) and its id.
    pub fn org(&self, name: &str) -> String {
        let org = self.json(
            &[
                "org",
                "create",
                "--name",
                name,
                "--owner",
                "founder@example.com",
                "--json",
            ],
            None,
        );
        org["organization"]["id"].as_str().unwrap().to_owned()
    }

    /// A person with [`PASSWORD`] and `role` in `org`.
    pub fn person(&self, email: &str, org: &str, role: &str) {
        self.json(
            &[
                "user",
                "create",
                "--email",
                email,
                "--password-stdin",
                "--org",
                org,
                "--role",
                role,
                "--json",
            ],
            Some(PASSWORD),
        );
    }

    /// `creapic serve --listen 127.0.0.1:0 --no-runner` on this store, with `env` added.
    pub fn serve(&self, env: &[(&str, &str)]) -> Serve {
        self.serve_with(&["--no-runner"], env)
    }

    /// `creapic serve --listen 127.0.0.1:0 FLAGS…` on this store, with `env` added (the log
    /// at `warn`).
    pub fn serve_with(&self, flags: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut command = self.command();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        spawn_serve(command)
    }
}
