//! The kit is two module trees, and the generation tree never imports the HTTP tree (see
//! docs/ARCHITECTURE.md). The compiler cannot say so: one crate sees all its modules. So this
//! test reads the sources under `src/generation/` (and `src/config.rs` and `src/telemetry.rs`,
//! which that tree reads)
//! and fails on any path that leaves them for anything but the crate root's shared items:
//!
//! - a `crate::` path must go on to `generation`, `config`, `telemetry` (metric names and
//!   buckets, shared by both trees and importing neither) or `Core` — not `http`, not
//!   `upkeep` (which joins both trees), not the root's re-exports of HTTP items (`crate::Error`
//!   is the HTTP error; the generation tree's is `crate::generation::Error`);
//! - `super::super::` is refused outright: a climb that long can leave the tree unnoticed, and a
//!   `crate::` path says where it goes.
//!
//! Comments count: a doc that points the reader at the HTTP tree is a dependency in prose.

use std::path::{Path, PathBuf};

/// What a path from the crate root may name from inside the generation tree.
const ALLOWED_ROOTS: &[&str] = &["generation", "config", "telemetry", "Core"];

#[test]
fn the_generation_tree_never_imports_the_http_tree() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src.join("generation"), &mut files);
    files.push(src.join("config.rs"));
    files.push(src.join("telemetry.rs"));
    assert!(
        files.len() > 10,
        "the generation tree was not found: {files:?}"
    );
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let at_generation_root = file.ends_with("generation/mod.rs");
        for (offset, problem) in problems(&text, at_generation_root) {
            let n = text[..offset].matches('\n').count();
            let line = text.lines().nth(n).unwrap_or_default();
            found.push(format!(
                "{}:{}: {problem}\n    {}",
                file.strip_prefix(&src).unwrap_or(file).display(),
                n + 1,
                line.trim()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "the generation tree must not reach the HTTP tree:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_what_it_claims_to() {
    let refused = [
        "use crate::http::service::AppState;",
        "use crate::Error;",
        "use crate::{Core, http::idempotent::Failure};",
        "use crate::upkeep::Upkeep;",
        "/// see [`crate::http::views`]",
        "use super::super::http::views;",
        "use crate::AppState;",
    ];
    for line in refused {
        assert!(!problems(line, false).is_empty(), "not caught: {line}");
    }
    // A group rustfmt spread over lines is read whole.
    let spread = "use crate::{\n    config::Limits,\n    http::service::AppState,\n};";
    assert_eq!(problems(spread, false).len(), 1, "{spread}");
    assert!(!problems("use super::http::Error;", true).is_empty());
    let accepted = [
        "use crate::generation::Error;",
        "use crate::config::{Limits, Pricing};",
        "use crate::Core;",
        "use crate::{Core, config::Pricing};",
        "use http::StatusCode;",
        "use super::transport::{self, HttpSettings};",
        "use super::*;",
    ];
    for line in accepted {
        assert!(problems(line, false).is_empty(), "{line}");
    }
}

/// Every `.rs` file under `dir`.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("a readable source directory");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// What is wrong in `text`, each with its byte offset. `at_generation_root`: the text is
/// `generation/mod.rs`, where one `super::` is the crate root.
fn problems(text: &str, at_generation_root: bool) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("super::super::") {
        out.push((
            at,
            "`super::super::` climbs out of sight; write the `crate::` path".to_owned(),
        ));
    }
    let mut roots = paths_after(text, "crate::");
    if at_generation_root {
        roots.extend(paths_after(text, "super::"));
    }
    for (at, rest) in roots {
        for name in first_names(rest) {
            if name.is_empty() {
                out.push((
                    at,
                    "a path this check cannot read; write it plainly".to_owned(),
                ));
            } else if !ALLOWED_ROOTS.contains(&name.as_str()) {
                out.push((
                    at,
                    format!(
                        "the crate root's `{name}` is outside the generation tree \
                         (allowed: {ALLOWED_ROOTS:?})"
                    ),
                ));
            }
        }
    }
    out
}

/// The offset of each occurrence of `prefix` that starts a path (not the tail of a longer
/// name, e.g. `$crate::`), and the text after it.
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<(usize, &'a str)> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            let before = text[..*at].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':')
        })
        .map(|(at, _)| (at, &text[at + prefix.len()..]))
        .collect()
}

/// The first segment of a path, or the first segment of each item of a `{…}` group.
fn first_names(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.trim_start().strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                names.push(ident(&group[i..]));
                item_start = false;
            }
            _ => {}
        }
    }
    names
}
