//! No handler moves credits: paid work goes through the generation tree (`PaidGenerator`) or
//! the job runner, which decide reserves, captures and refunds in one place (see
//! docs/ARCHITECTURE.md). The compiler cannot say so — a handler may call any public core
//! method — so this test reads the HTTP handlers' and the console's sources and fails on any
//! call of the core's credit operations or any use of the ledger's request types.

use std::path::{Path, PathBuf};

/// What a handler must never write: the core's credit calls and the ledger's request types.
const FORBIDDEN: &[&str] = &[
    ".reserve(",
    ".capture(",
    ".release(",
    ".grant(",
    ".debit(",
    "LedgerRequest",
    "LedgerOp",
    "LedgerStore",
];

#[test]
fn handlers_and_console_pages_never_call_the_ledger() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = Vec::new();
    collect(&src.join("handlers"), &mut files);
    collect(&src.join("console"), &mut files);
    assert!(files.len() > 10, "the handlers were not found: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                if code.contains(word) {
                    found.push(format!(
                        "{}:{}: `{word}` in {:?}",
                        file.strip_prefix(&src).unwrap_or(file).display(),
                        n + 1,
                        code
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "handlers must leave credits to PaidGenerator and the runner:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_a_forbidden_call() {
    let line = "    let receipt = state.core().reserve(org, amount, &key).await?;";
    assert!(FORBIDDEN.iter().any(|w| line.contains(w)));
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
