//! `creapic backup` and `creapic restore`: copies of the SQLite database that are consistent
//! while `serve` writes, and a restore that proves a copy sound before it becomes the database.
//!
//! The design decision that shapes it: **a restore checks before it replaces.** A backup is one
//! `VACUUM INTO` (`SqliteStore::backup_to`: one read transaction, so one instant of the
//! database, taken without stopping the writer). A restore works on a private copy of the file
//! in the data directory: it must open as SQLite, carry no migration this build does not know,
//! have an intact audit hash chain (`Creapic::verify_audit_chain`) and, for every organization,
//! ledger entries that add up to the balance (`Creapic::verify_ledgers`). Only then is a clean
//! copy of it renamed over the database, so the database is the old one or the checked one,
//! never a mix. PostgreSQL is backed up with its own tools (`pg_dump`, docs/operations.md).
//!
//! A restore must not pull the file from under a running server (which would keep writing to
//! the old file, and lose it): `serve` holds a shared lock on `creapic.db.lock` next to the
//! database for as long as it runs ([`ServeLock`]), and `restore` takes it exclusively, without
//! waiting — so it refuses while any server uses the database, and no server starts during a
//! restore. Only the database is copied: media and the media signing key live as files in the
//! data directory and are copied as files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use creapic_core::Creapic;
use creapic_core::store::sqlite::SqliteStore;
use creapic_core::store::{ConnectOptions, Store};
use serde_json::json;

use crate::cli::{BackupArgs, CliError, CliResult, RestoreArgs, StoreArgs};
use crate::output;

/// The database file a command backs up or restores: the data directory's, or the SQLite file
/// `--database` names. PostgreSQL is refused (exit code 2) with where to look instead.
fn database_file(args: &StoreArgs) -> CliResult<PathBuf> {
    let Some(url) = &args.database else {
        return Ok(args.data_dir.join("creapic.db"));
    };
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(CliError::usage(
            "backup and restore copy SQLite databases; this is not one (on PostgreSQL, use pg_dump)",
        )
        .hint("docs/operations.md, \"Backups\", says what to dump and how to restore it"));
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return Err(CliError::usage(
            "--database names an in-memory SQLite database: there is no file to copy",
        ));
    }
    Ok(PathBuf::from(path))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The lock file `serve` holds shared and `restore` exclusively: the database's path + `.lock`.
fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A lock on a database's lock file, released when dropped (or when the process ends, however
/// it ends: the operating system drops `flock` locks with the file).
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

impl ServeLock {
    /// `serve`'s lock: shared, so several servers may use one database; refused while a restore
    /// holds it.
    pub fn shared(store: &StoreArgs) -> CliResult<Option<Self>> {
        let database = match &store.database {
            Some(url) if !url.starts_with("sqlite:") || url.contains(":memory:") => {
                return Ok(None);
            }
            _ => database_file(store)?,
        };
        Self::take(&database, false)
            .map(Some)
            .map_err(|e| e.hint("wait for `creapic restore` to finish, then start the server"))
    }

    fn take(database: &Path, exclusive: bool) -> CliResult<Self> {
        let path = lock_path(database);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CliError::new(format!("cannot open {}: {e}", path.display())))?;
        #[cfg(unix)]
        {
            use rustix::fs::{FlockOperation, flock};
            let how = if exclusive {
                FlockOperation::NonBlockingLockExclusive
            } else {
                FlockOperation::NonBlockingLockShared
            };
            if let Err(e) = flock(&file, how) {
                let held = if exclusive {
                    "a server is using"
                } else {
                    "a restore is replacing"
                };
                return Err(CliError::new(format!(
                    "{held} the database {} ({} is locked: {e})",
                    database.display(),
                    path.display()
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = exclusive;
        Ok(ServeLock { _file: file })
    }
}

/// `creapic backup --out FILE`.
pub async fn backup(args: &StoreArgs, cmd: BackupArgs) -> CliResult {
    let database = database_file(args)?;
    if !database.is_file() {
        return Err(CliError::new(format!(
            "there is no database at {} to back up",
            database.display()
        ))
        .hint("--data-dir (or --database sqlite://PATH) names the database `serve` uses"));
    }
    if cmd.out.exists() {
        return Err(CliError::new(format!(
            "{} already exists; a backup never overwrites a file",
            cmd.out.display()
        ))
        .hint("choose a new name, e.g. with the date: --out creapic-$(date +%F-%H%M).db"));
    }
    let options = ConnectOptions::default().migrate(false).max_connections(1);
    let store = SqliteStore::connect(&sqlite_url(&database), &options).await?;
    let written = store.backup_to(&cmd.out).await;
    store.close().await;
    let bytes = written?;
    if cmd.json {
        return output::json(&json!({
            "database": database.display().to_string(),
            "file": cmd.out.display().to_string(),
            "bytes": bytes,
        }));
    }
    output::line(format!(
        "backup written: {} ({bytes} bytes, a consistent copy of {})",
        cmd.out.display(),
        database.display()
    ));
    output::line(format!(
        "restore it with: creapic restore --from {}",
        cmd.out.display()
    ));
    Ok(())
}

/// What a restore checked and installed.
struct Checked {
    events: u64,
    head_hash: String,
    organizations: u64,
    entries: u64,
    total_balance: u64,
    bytes: u64,
}

/// `creapic restore --from FILE [--force]`.
pub async fn restore(args: &StoreArgs, cmd: RestoreArgs) -> CliResult {
    let database = database_file(args)?;
    if !cmd.from.is_file() {
        return Err(CliError::new(format!(
            "there is no backup at {}",
            cmd.from.display()
        )));
    }
    if args.database.is_none() {
        crate::data_dir::create(&args.data_dir)?;
    }
    let _lock = ServeLock::take(&database, true)
        .map_err(|e| e.hint("stop `creapic serve` on this data directory first"))?;
    if database.exists() && !cmd.force {
        return Err(CliError::new(format!(
            "a database already exists at {}",
            database.display()
        ))
        .hint("add --force to replace it (back it up first: `creapic backup --out FILE`)"));
    }
    let dir = database.parent().unwrap_or(Path::new("."));
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "creapic.db".to_owned());
    let pid = std::process::id();
    let work = dir.join(format!(".{name}.restore-check-{pid}"));
    let staged = dir.join(format!(".{name}.restore-staged-{pid}"));
    let result = check_and_install(&cmd.from, &work, &staged, &database).await;
    for leftover in [&work, &staged] {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = leftover.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(path));
        }
    }
    let checked = result?;
    if cmd.json {
        return output::json(&json!({
            "restored": database.display().to_string(),
            "from": cmd.from.display().to_string(),
            "bytes": checked.bytes,
            "auditEventsChecked": checked.events,
            "auditHeadHash": checked.head_hash,
            "organizations": checked.organizations,
            "ledgerEntries": checked.entries,
            "totalBalance": checked.total_balance,
        }));
    }
    output::line(format!(
        "restored {} into {} ({} bytes)",
        cmd.from.display(),
        database.display(),
        checked.bytes
    ));
    output::line(format!(
        "audit chain intact: {} events checked, head hash {}",
        checked.events, checked.head_hash
    ));
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    output::line(format!(
        "ledgers consistent: {}, {}, total balance {}",
        plural(checked.organizations, "organization", "organizations"),
        plural(checked.entries, "entry", "entries"),
        checked.total_balance
    ));
    Ok(())
}

/// Copies `from` to `work`, checks it, writes a clean copy to `staged` and renames it over
/// `database`. The caller removes `work` and `staged` whatever happens.
async fn check_and_install(
    from: &Path,
    work: &Path,
    staged: &Path,
    database: &Path,
) -> CliResult<Checked> {
    let refused =
        |why: String| CliError::new(format!("refusing to restore {}: {why}", from.display()));
    copy_private(from, work).map_err(|e| {
        CliError::new(format!(
            "cannot copy {} into {}: {e}",
            from.display(),
            work.display()
        ))
    })?;
    let url = sqlite_url(work);
    let as_is = ConnectOptions::default().migrate(false).max_connections(1);
    let store = SqliteStore::connect(&url, &as_is)
        .await
        .map_err(|e| refused(format!("it is not a SQLite database ({e})")))?;
    let unknown = store.unknown_migrations().await;
    store.close().await;
    let unknown = unknown.map_err(|e| refused(format!("it is not a SQLite database ({e})")))?;
    if !unknown.is_empty() {
        return Err(refused(format!(
            "a newer creapic wrote it (migrations {unknown:?} are unknown to this build)"
        ))
        .hint("restore it with the creapic version that made it, or a newer one"));
    }
    // Migrations this build adds are applied to the copy, as `serve` would on start.
    let store = SqliteStore::connect(&url, &as_is.clone().migrate(true))
        .await
        .map_err(|e| refused(format!("its schema cannot be brought up to date ({e})")))?;
    let checked = check(&store, from).await;
    let bytes = match checked {
        Ok(_) => store.backup_to(staged).await.map_err(CliError::from),
        Err(_) => Ok(0),
    };
    store.close().await;
    let mut checked = checked?;
    checked.bytes = bytes?;
    for suffix in ["-wal", "-shm"] {
        let mut path = database.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(CliError::new(format!(
                "cannot remove the old database's {}: {e}",
                path.display()
            )));
        }
    }
    std::fs::rename(staged, database).map_err(|e| {
        CliError::new(format!(
            "cannot move the checked copy to {}: {e}",
            database.display()
        ))
    })?;
    Ok(checked)
}

/// The audit chain and every ledger of the copy.
async fn check(store: &SqliteStore, from: &Path) -> CliResult<Checked> {
    let refused =
        |why: String| CliError::new(format!("refusing to restore {}: {why}", from.display()));
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let core = Creapic::new(shared);
    let report = core.verify_audit_chain().await?;
    if let Some(broken) = &report.broken {
        return Err(refused(format!(
            "its audit chain is broken at seq {}: {} ({} events before it verified)",
            broken.seq,
            broken.kind.describe(),
            report.checked
        ))
        .hint("a row of audit_events was changed or deleted after it was written; use an earlier backup"));
    }
    let ledgers = core.verify_ledgers().await?;
    if let Some(first) = ledgers.mismatches.first() {
        return Err(refused(format!(
            "the ledger of {} organization(s) does not add up to the balance; the first, {}, \
             has entries summing to {} and a balance of {}",
            ledgers.mismatched, first.org, first.entries_sum, first.balance
        ))
        .hint("use an earlier backup"));
    }
    Ok(Checked {
        events: report.checked,
        head_hash: report.head.digest().to_hex(),
        organizations: ledgers.organizations,
        entries: ledgers.entries,
        total_balance: ledgers.total_balance,
        bytes: 0,
    })
}

/// Copies `from` to the new file `to`, readable by its owner only.
fn copy_private(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut target = options.open(to)?;
    let mut source = std::fs::File::open(from)?;
    let n = std::io::copy(&mut source, &mut target)?;
    target.sync_all()?;
    Ok(n)
}
