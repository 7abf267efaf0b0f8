//! The edges of `creapic serve` that an attacker or another local user reaches first, tried
//! against the built binary on SQLite:
//!
//! - a client that sends half a request line and then nothing is disconnected while other
//!   clients keep being served; a body that stops arriving is a 400 at its deadline (the kit's
//!   answer to an unreadable body); no more
//!   connections are served at once than the cap;
//! - behind `--trust-forwarded-for`, the audited IP is the one the proxy appended, not the one
//!   the client wrote;
//! - `/metrics` is not on the API address, only on `--metrics-listen`;
//! - the data directory is 0700 and the database, its WAL and shared memory, media and the
//!   signing key 0600; a signing key others can read is refused;
//! - the dashboard stand-in refuses a wrong token and an unknown user, and creates nothing.
//!
//! Flags go through their environment variables where they have one, so a binary without them
//! fails on the behaviour, not at argument parsing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BIN, Serve, cli, cli_json, spawn_serve};

const DASHBOARD_TOKEN: &str = "edges-dashboard-token";

/// A data directory path that does not exist yet: the binary creates it.
fn fresh_dir() -> PathBuf {
    std::env::temp_dir().join(format!("creapic-edges-{}", uuid::Uuid::now_v7().simple()))
}

fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("CREAPIC_DATABASE_URL")
        .arg("--dev-dashboard-token")
        .env("CREAPIC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    spawn_serve(command)
}

/// An organization owned by owner@example.com with 20 credits and a live key.
fn org_with_key(dir: &Path) -> (String, String) {
    let org = cli_json(
        dir,
        &[
            "org",
            "create",
            "--name",
            "Edges Org",
            "--owner",
            "owner@example.com",
            "--json",
        ],
    );
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    cli_json(
        dir,
        &[
            "credits", "grant", "--org", &org_id, "--amount", "20", "--json",
        ],
    );
    let key = cli_json(
        dir,
        &[
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "edges",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
    );
    (org_id, key["key"].as_str().unwrap().to_owned())
}

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_connection_is_closed_while_others_are_served() {
    let dir = fresh_dir();
    let server = serve(&dir, &[], &[("CREAPIC_HEADER_READ_TIMEOUT_SECS", "2")]);
    let mut slow = std::net::TcpStream::connect(addr_of(&server.base)).unwrap();
    slow.write_all(b"GET /api/hea").unwrap();
    // Bounded: the test gives up after 60 s, far beyond the 2 s the server allows.
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served = 0;
    let closed = loop {
        // Normal traffic keeps flowing meanwhile, on fresh connections.
        let health = http
            .get(format!("{}/api/health", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        served += 1;
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            // EOF (or whatever the server said before closing, then EOF on the next read).
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    assert!(closed, "the half-sent request was still open after 60 s");
    assert!(served >= 1);
    // And the server still serves after closing it.
    let health = http
        .get(format!("{}/api/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads from `stream` until the server closes it or `max` passes; returns what it sent and
/// whether it closed.
fn read_until_closed(stream: &mut std::net::TcpStream, max: Duration) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + max;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_refused_at_its_deadline() {
    let dir = fresh_dir();
    let (_, key) = org_with_key(&dir);
    let server = serve(&dir, &[], &[("CREAPIC_BODY_READ_TIMEOUT_SECS", "2")]);
    let mut slow = std::net::TcpStream::connect(addr_of(&server.base)).unwrap();
    let head = format!(
        "POST /api/public/images/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"source\":"
    );
    slow.write_all(head.as_bytes()).unwrap();
    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(60));
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a 400 at the body deadline, not a wait for the client: {answer:?}"
    );
    assert!(
        answer.contains("the request body could not be read"),
        "{answer}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let dir = fresh_dir();
    let server = serve(&dir, &[], &[("CREAPIC_MAX_CONNECTIONS", "2")]);
    let addr = addr_of(&server.base);
    let request = b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // Two idle connections take both places.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third is accepted by the kernel (backlog) but not served while both are held.
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    third.write_all(request).unwrap();
    let (early, _) = read_until_closed(&mut third, Duration::from_secs(2));
    assert!(early.is_empty(), "served beyond the cap: {early:?}");
    drop(held);
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(60));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audited_ip_is_the_one_the_trusted_proxy_appended() {
    let dir = fresh_dir();
    let (org_id, _) = org_with_key(&dir);
    let server = serve(&dir, &["--trust-forwarded-for"], &[]);
    let http = reqwest::Client::new();
    // The client wrote 6.6.6.6; the proxy appended the address it saw, 10.0.0.1.
    let created = http
        .post(format!("{}/api/keys", server.base))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .header("x-forwarded-for", "6.6.6.6, 10.0.0.1")
        .json(&json!({"organizationId": org_id, "name": "proxied", "scopes": ["IMAGE_GENERATION"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let audit = cli_json(&dir, &["audit", "--org", &org_id, "--format", "json"]);
    let event = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["action"] == "key.created")
        .unwrap_or_else(|| panic!("no key.created: {audit}"));
    assert_eq!(event["ip"], "10.0.0.1", "{event}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_their_own_address_only() {
    let dir = fresh_dir();
    let server = serve(&dir, &[], &[("CREAPIC_METRICS_LISTEN", "127.0.0.1:0")]);
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/api/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let public = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404, "the API address serves no metrics");
    let line = server
        .wait_for_log("creapic metrics on ", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no metrics address printed; log:\n{}", server.log_text()));
    let url = line
        .trim()
        .trim_start_matches("creapic metrics on ")
        .to_owned();
    let private = http.get(&url).send().await.unwrap();
    assert_eq!(private.status(), 200);
    let text = private.text().await.unwrap();
    assert!(
        text.contains(
            r#"creapic_http_requests_total{route="/api/health",method="GET",status="200"}"#
        ),
        "{text}"
    );
    // The metrics address serves nothing else.
    let other = http
        .get(url.replace("/metrics", "/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_and_a_readable_signing_key_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = fresh_dir();
    let (_, key) = org_with_key(&dir);
    let mut server = serve(&dir, &[], &[]);
    let http = reqwest::Client::new();
    let generated = http
        .post(format!("{}/api/public/images/generate", server.base))
        .bearer_auth(&key)
        .json(&json!({"source": {"type": "text", "text": "a private garden"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.status(), 200);
    // While the server runs: the database, its WAL and shared memory, media, the key.
    let mut paths = Vec::new();
    walk(&dir, &mut paths);
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "creapic.db",
        "creapic.db-wal",
        "creapic.db-shm",
        "media-signing.key",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "png")),
        "an image was stored: {paths:?}"
    );
    assert_eq!(mode(&dir), 0o700, "the data directory");
    let open: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            (mode(p) != want).then(|| format!("{} {:o}", p.display(), mode(p)))
        })
        .collect();
    assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(60)).is_some());
    drop(server);

    // A signing key others can read is refused, with a message that says why and what to do.
    let key_file = dir.join("media-signing.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("CREAPIC_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("media-signing.key") && stderr.contains("other users"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_stand_in_refuses_a_wrong_token_and_an_unknown_user() {
    let dir = fresh_dir();
    let (org_id, _) = org_with_key(&dir);
    let server = serve(&dir, &[], &[]);
    let http = reqwest::Client::new();
    let keys_before = cli_json(&dir, &["key", "list", "--org", &org_id, "--all", "--json"]);
    let attempts = [
        (
            "wrong token",
            Some("not-the-token"),
            Some("owner@example.com"),
        ),
        (
            "token of another length",
            Some("x"),
            Some("owner@example.com"),
        ),
        (
            "unknown user",
            Some(DASHBOARD_TOKEN),
            Some("nobody@example.com"),
        ),
        ("no user", Some(DASHBOARD_TOKEN), None),
        ("no token", None, Some("owner@example.com")),
    ];
    for (why, token, user) in attempts {
        let mut create = http
            .post(format!("{}/api/keys", server.base))
            .header("idempotency-key", format!("edges-{why}"))
            .json(&json!({"organizationId": org_id, "name": "intruder", "scopes": ["IMAGE_GENERATION"]}));
        let mut list = http.get(format!("{}/api/keys?organizationId={org_id}", server.base));
        let mut audit = http.get(format!("{}/api/audit?organizationId={org_id}", server.base));
        if let Some(token) = token {
            create = create.header("x-dashboard-token", token);
            list = list.header("x-dashboard-token", token);
            audit = audit.header("x-dashboard-token", token);
        }
        if let Some(user) = user {
            create = create.header("x-dashboard-user", user);
            list = list.header("x-dashboard-user", user);
            audit = audit.header("x-dashboard-user", user);
        }
        for (what, request) in [("create", create), ("list", list), ("audit", audit)] {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{why}: {what}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["code"], "not_signed_in", "{why}: {what}: {body}");
            assert!(body["key"].is_null(), "{why}: {what}: {body}");
        }
    }
    let keys_after = cli_json(&dir, &["key", "list", "--org", &org_id, "--all", "--json"]);
    assert_eq!(keys_before, keys_after, "no key was created");
    let audit = cli(&dir, &["audit", "--org", &org_id, "--format", "json"]);
    let audit: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let created = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.created")
        .count();
    assert_eq!(created, 1, "only the CLI's key was ever created: {audit}");
    // The right token and user still work (the refusals above were not a broken login).
    let ok = http
        .get(format!("{}/api/keys?organizationId={org_id}", server.base))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Total bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_quota_flag_bounds_what_an_organization_stores() {
    let dir = fresh_dir();
    let server = serve(&dir, &[], &[("CREAPIC_MEDIA_QUOTA_MIB", "1")]);
    let (org, key) = org_with_key(&dir);
    cli_json(
        &dir,
        &[
            "credits", "grant", "--org", &org, "--amount", "200", "--json",
        ],
    );
    let http = reqwest::Client::new();
    let mut generated = 0u64;
    let mut refused = None;
    // Bounded: 60 distinct hd images would be far more than 1 MiB.
    for i in 0..60 {
        let answer = http
            .post(format!("{}/api/public/images/generate", server.base))
            .bearer_auth(&key)
            .json(&json!({
                "source": {"type": "text", "text": format!("a lighthouse number {i} at dusk")},
                "quality": "hd"
            }))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        match status {
            200 => generated += 1,
            _ => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("the quota was never reached");
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("limit_exceeded")),
        "{body}"
    );
    assert!(generated >= 1, "the quota let nothing through");
    let stored = bytes_under(&dir.join("media").join("orgs"));
    assert!(
        stored <= 1024 * 1024,
        "{stored} bytes stored past a 1 MiB quota"
    );
    // Paid for exactly what was stored: 220 granted, 2 per hd image.
    let balance = cli_json(&dir, &["credits", "balance", "--org", &org, "--json"]);
    assert_eq!(
        balance["balance"].as_u64(),
        Some(220 - 2 * generated),
        "{balance}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
