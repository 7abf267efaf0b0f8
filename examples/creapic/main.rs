//! The `creapic` binary: the reference host of the server kit, an admin CLI over the store, and a
//! client CLI for integrators.
//!
//! - `creapic serve` runs everything on embedded defaults — SQLite in the data directory, media
//!   on the local disk, the offline renderer — and PostgreSQL, S3 and Gemini by flag.
//! - `org`, `key`, `credits` and `audit` act on the store directly, as the operator. They work
//!   while `serve` runs on the same SQLite file (WAL, busy timeout).
//! - `generate`, `bulk`, `render`, `job`, `image`, `balance` and `usage` call a running server
//!   through `creapic-client` (`--api-key` / `--base-url`, else the integrator's environment).
//! - `backup --out FILE` copies the SQLite database consistently while `serve` writes;
//!   `restore --from FILE` checks a copy (audit chain, ledgers) before installing it.
//! - `completions SHELL` prints a completion script.
//! - `openapi` prints the OpenAPI document `serve` serves (`docs/openapi.json`), touching no
//!   store.
//!
//! Every bad argument is a message on stderr and exit code 2; every failure a message and exit
//! code 1; with `--json` the one JSON document is the only thing on stdout.
#![allow(clippy::print_stdout, missing_docs, unreachable_pub)]

mod admin;
mod backup;
mod banner;
mod cli;
mod connections;
mod data_dir;
mod integrator;
mod output;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success; usage errors to stderr with code 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `serve` logs through a writer thread from its first line to its last (the error it stops
    // with included); the guard, dropped when `main` returns, flushes what is queued.
    let log = match &cli.command {
        cli::Command::Serve(args) => match serve::init_tracing(args.log_format) {
            Ok(flush) => Some((args.log_format, flush)),
            Err(e) => {
                eprintln!("error: could not start the log writer thread: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some((cli::LogFormat::Json, _)) = &log {
                tracing::error!(target: "creapic::serve", hint = e.hint.as_deref(), "{e}");
            } else {
                eprintln!("error: {e}");
                if let Some(hint) = &e.hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::from(e.exit_code)
        }
    }
}
