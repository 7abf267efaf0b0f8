//! The committed OpenAPI document, `docs/openapi.json`, against the one a default-configured
//! kit serves at `GET /api/openapi`: both as canonical text (`reference::canonical_text`: keys
//! sorted, pretty-printed), so any drift fails with the first differing line and the command
//! that regenerates the file. `CREAPIC_UPDATE_OPENAPI=1` rewrites the file instead of failing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use creapic_server_kit::http::reference;

const REGENERATE: &str = "regenerate it with `cargo run --bin creapic -- openapi > docs/openapi.json` \
(or `CREAPIC_UPDATE_OPENAPI=1 cargo test -p creapic-server-kit --test openapi_document`) \
and commit it with the change that moved it";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

/// The first line where `a` and `b` differ (1-based), with both versions of it.
fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let (mut left, mut right) = (a.lines(), b.lines());
    for n in 1.. {
        match (left.next(), right.next()) {
            (None, None) => return None,
            (l, r) if l == r => continue,
            (l, r) => {
                let show = |line: Option<&str>| line.unwrap_or("<end of file>").to_owned();
                return Some((n, show(l), show(r)));
            }
        }
    }
    None
}

#[tokio::test]
async fn docs_openapi_json_is_what_the_server_serves() {
    let app = common::app().await;
    let response = app.http.get(app.url("/api/openapi")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let served: serde_json::Value = response.json().await.unwrap();
    let served = reference::canonical_text(&served);
    // What `creapic openapi` prints is the same text (the regeneration command relies on it).
    assert_eq!(
        served,
        reference::document_text(&creapic_server_kit::Limits::default())
    );

    let path = committed_path();
    if std::env::var_os("CREAPIC_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &served).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some((line, file, server)) = first_difference(&committed, &served) {
        panic!(
            "docs/openapi.json differs from the document the server serves, first at line \
             {line}:\n  file:   {file}\n  served: {server}\n{REGENERATE}"
        );
    }
}

#[test]
fn first_difference_names_the_line() {
    assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
    assert_eq!(
        first_difference("a\nb\n", "a\nc\n"),
        Some((2, "b".into(), "c".into()))
    );
    assert_eq!(
        first_difference("a\n", "a\nc\n"),
        Some((2, "<end of file>".into(), "c".into()))
    );
}
