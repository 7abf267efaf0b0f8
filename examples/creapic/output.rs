//! How commands print: one JSON document with `--json` (and nothing else on stdout), or short
//! human-readable lines otherwise.

use serde::Serialize;

use crate::cli::{CliError, CliResult};

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(format!("could not encode the output: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Warns the operator on stderr: a `warn` event when `serve` has set up its log (in JSON mode
/// stderr holds JSON lines only), else a `warning:` line.
pub fn warn(text: impl std::fmt::Display) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(target: "creapic::serve", "{text}");
    } else {
        eprintln!("warning: {text}");
    }
}

/// Prints a line on stdout.
pub fn line(text: impl std::fmt::Display) {
    println!("{text}");
}
