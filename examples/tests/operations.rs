//! What docs/operations.md tells an operator to run, checked: its systemd unit passes
//! `systemd-analyze verify` (with `ExecStart` pointing at the built binary), and every
//! `CREAPIC_*` variable the unit and the guide set is one `creapic serve` knows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod support;

const GUIDE: &str = include_str!("../../docs/operations.md");

/// The ```ini block of the guide that holds the unit.
fn unit() -> String {
    let start = GUIDE
        .find("```ini\n# /etc/systemd/system/creapic.service")
        .expect("the guide shows the unit");
    let body = &GUIDE[start + "```ini\n".len()..];
    body[..body.find("```").unwrap()].to_owned()
}

#[test]
fn the_guides_systemd_unit_verifies() {
    let dir = std::env::temp_dir().join(format!("creapic-unit-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = unit().replace("/usr/local/bin/creapic", support::BIN);
    assert!(unit.contains(support::BIN));
    let path = dir.join("creapic.service");
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian: systemd) checks the guide's unit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units on this machine are not the guide's business.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("creapic.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{unit}\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_variable_the_guide_sets_is_one_serve_knows() {
    let help = Command::new(support::BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // Read by the binary itself rather than by a flag.
    let outside_flags = ["CREAPIC_MEDIA_SIGNING_KEY"];
    let mut seen = 0;
    for (at, _) in GUIDE.match_indices("CREAPIC_") {
        let name: String = GUIDE[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name == "CREAPIC_" {
            continue; // "`CREAPIC_*` variables", the family
        }
        seen += 1;
        assert!(
            outside_flags.contains(&name.as_str()) || help.contains(&format!("[env: {name}=")),
            "docs/operations.md sets {name}, which `creapic serve` does not read"
        );
    }
    assert!(seen >= 10);
}
