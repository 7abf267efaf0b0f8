//! The code map of docs/ARCHITECTURE.md is complete and names no file that is gone.
//!
//! The convention the map documents at its top: under `## Code map`, each directory has a
//! `####` heading naming its path from the workspace root in backticks (`` #### `creapic-core/src/store/sql/` ``),
//! and each of its files one list line that starts `` - `file.rs` — `` with the file name only.
//! This test walks every `.rs` file of the three library crates' `src/` and of
//! `examples/creapic/`, and fails listing every file without its line (and every line whose
//! file does not exist), so a new module cannot land without its one-line description.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The trees whose every `.rs` file the code map lists, from the workspace root.
const TREES: [&str; 4] = [
    "creapic-core/src",
    "creapic-server-kit/src",
    "creapic-client/src",
    "examples/creapic",
];

/// The document that holds the map, from the workspace root.
const DOC: &str = "docs/ARCHITECTURE.md";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, as a `/`-separated path from `root`.
fn rust_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let relative = path.strip_prefix(root).expect("under the root");
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.insert(parts.join("/"));
        }
    }
}

/// The text between the first pair of backticks of `line`, if any.
fn first_code_span(line: &str) -> Option<&str> {
    let start = line.find('`')? + 1;
    let len = line[start..].find('`')?;
    Some(&line[start..start + len])
}

/// The files the code map lists, as paths from the workspace root (directory heading + name),
/// and the problems of its shape (a file line outside a directory heading, a heading that is
/// not a directory).
fn documented(doc: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut files = BTreeSet::new();
    let mut problems = Vec::new();
    let mut in_map = false;
    let mut dir: Option<String> = None;
    for (n, line) in doc.lines().enumerate() {
        let n = n + 1;
        if line.starts_with("## ") {
            in_map = line.trim() == "## Code map";
            dir = None;
            continue;
        }
        if !in_map {
            continue;
        }
        if let Some(heading) = line.strip_prefix("#### ") {
            match first_code_span(heading) {
                Some(d) if d.ends_with('/') => dir = Some(d.to_owned()),
                _ => {
                    problems.push(format!(
                        "line {n}: a #### heading must name a directory in backticks, ending in /"
                    ));
                    dir = None;
                }
            }
        } else if line.starts_with("### ") {
            dir = None;
        } else if line.starts_with("- `") {
            let name = first_code_span(line).unwrap_or_default();
            if !name.ends_with(".rs") {
                continue;
            }
            match &dir {
                Some(d) if !name.contains('/') => {
                    files.insert(format!("{d}{name}"));
                }
                Some(_) => problems.push(format!(
                    "line {n}: `{name}`: a file line names the file only, its directory is the heading's"
                )),
                None => problems.push(format!(
                    "line {n}: `{name}` is not under a #### `directory/` heading"
                )),
            }
        }
    }
    (files, problems)
}

#[test]
fn the_code_map_lists_every_source_file() {
    let root = workspace_root();
    let doc = fs::read_to_string(root.join(DOC)).unwrap_or_else(|e| panic!("read {DOC}: {e}"));
    let (listed, mut problems) = documented(&doc);

    let mut existing = BTreeSet::new();
    for tree in TREES {
        rust_files(&root, &root.join(tree), &mut existing);
    }
    assert!(
        existing.len() > 100,
        "the walk found only {} files",
        existing.len()
    );

    let missing: Vec<_> = existing.difference(&listed).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} source file(s) have no line in the code map of {DOC} \
             (add `- `name.rs` — …` under its #### `directory/` heading):",
            missing.len()
        ));
        problems.extend(missing.iter().map(|f| format!("  missing: {f}")));
    }
    let gone: Vec<_> = listed
        .iter()
        .filter(|f| !root.join(f.as_str()).is_file())
        .collect();
    if !gone.is_empty() {
        problems.push(format!(
            "{} code map line(s) name a file that does not exist:",
            gone.len()
        ));
        problems.extend(gone.iter().map(|f| format!("  gone: {f}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_parser_reads_the_documented_convention() {
    let doc = "\
## Code map
### crate
#### `a/src/`
- `lib.rs` — the crate.
#### `a/src/store/`
- `mod.rs` — the traits.
- `Store` is not a file line.
### other
- `loose.rs` — outside a heading.
## Invariants
- `elsewhere.rs` — not in the map.
";
    let (files, problems) = documented(doc);
    let files: Vec<_> = files.into_iter().collect();
    assert_eq!(files, ["a/src/lib.rs", "a/src/store/mod.rs"]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("loose.rs"), "{problems:?}");
}
