//! The data directory's privacy: what the binary writes there (the SQLite database with its WAL
//! and shared memory, every organization's media, the media signing key) is readable by this
//! user only.
//!
//! The design decision that shapes it: **a umask for the process, not permissions per file.**
//! The files are created by SQLite, by `object_store` and by this binary, in several places and
//! libraries; a process umask of 077 makes every one of them 0600 (directories 0700) without
//! each creator having to remember. It is set before anything touches the data directory, by
//! every command that opens the store; the client commands (`generate`, `bulk`), which write the
//! user's own output files, keep the user's umask. The data directory itself is created 0700
//! explicitly, and a signing key file that group or others may read is refused, not used.

use std::path::Path;

use crate::cli::{CliError, CliResult};

/// Permission bits of group and others.
#[cfg(unix)]
const GROUP_OTHER_BITS: u32 = 0o077;

/// Makes every file and directory this process creates private to its user (umask 077).
pub fn restrict_umask() {
    #[cfg(unix)]
    {
        let _previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(GROUP_OTHER_BITS));
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist. An existing directory
/// that group or others can enter is used as it is, with a warning: its owner chose that.
pub fn create(dir: &Path) -> CliResult {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(0o700);
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & GROUP_OTHER_BITS != 0
        {
            crate::output::warn(format_args!(
                "the data directory {} is open to other users (mode {:o}); \
                 `chmod 700` it to keep their images and database private",
                dir.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    builder.create(dir).map_err(|e| {
        CliError::new(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    })
}

/// Refuses a secret file that group or others may read or write.
pub fn check_private(path: &Path) -> CliResult {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path)
            .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & GROUP_OTHER_BITS != 0 {
            return Err(CliError::new(format!(
                "{} is accessible to other users (mode {mode:o}); refusing to use it as a key",
                path.display()
            ))
            .hint(format!(
                "chmod 600 {} (and consider the key leaked: delete it to have a new one made, \
                 which invalidates the media links already handed out)",
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
