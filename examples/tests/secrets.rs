//! Secrets never at rest: after a full run of the built `creapic` binary on SQLite — keys made by
//! the admin CLI and the dashboard route, used by curl-style calls and the client CLI, sent
//! malformed and in the wrong header, replayed under an `Idempotency-Key`, deleted and refused —
//! no plaintext key is found anywhere it could leak: not in the data directory (the database
//! file, its WAL and shared memory, media, the signing key file), not in the server's logs at
//! `debug` level, not in any CLI output except the one that shows a new key, and not in the
//! `Debug` output of the types that hold keys in core and in the client.
//!
//! The search is for each key's 64-hex body, in lower and upper case, as raw bytes: a key
//! spread over a database page, logged in a header dump or kept in a WAL frame would all match.
//! The data directory is read twice: while the server runs (the WAL and shared-memory files
//! exist then — the test asserts it; once the last connection closes, SQLite checkpoints the
//! WAL into the database and removes both) and after it stopped. Every HTTP response body is searched, successful ones included, except the
//! one that shows a new key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_creapic");
const DASHBOARD_TOKEN: &str = "secrets-dashboard-token";

fn data_dir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("creapic-secrets-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Everything the binary printed, collected for the scan.
#[derive(Default, Clone)]
struct Transcript(Arc<Mutex<Vec<u8>>>);

impl Transcript {
    fn push(&self, bytes: &[u8]) {
        let mut t = self.0.lock().unwrap();
        t.extend_from_slice(bytes);
        t.push(b'\n');
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

fn cli(dir: &Path, args: &[&str], transcript: Option<&Transcript>) -> Output {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CREAPIC_DATABASE_URL")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    // Commands whose output is expected to show a key pass no transcript.
    if let Some(t) = transcript {
        t.push(&out.stdout);
        t.push(&out.stderr);
    }
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Server {
    child: Child,
    base: String,
    log: Transcript,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// SIGTERM (graceful: in-flight work finishes, last-used times are flushed), then waits for
    /// the log to end.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--dev-dashboard-token")
        .env("CREAPIC_DASHBOARD_TOKEN", DASHBOARD_TOKEN)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Transcript::default();
    let stdout = child.stdout.take().unwrap();
    let out_log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            out_log.push(&line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err_log = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            if let Some(addr) = text.strip_prefix("creapic listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
            err_log.push(&line);
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve printed its address");
    Server {
        child,
        base,
        log,
        reader: Some(reader),
    }
}

/// The 64-hex body of a key, as the needles to search for.
fn needles(key: &str) -> Vec<Vec<u8>> {
    let body = key.rsplit('_').next().unwrap();
    assert_eq!(body.len(), 64, "{key}");
    vec![
        body.as_bytes().to_vec(),
        body.to_ascii_uppercase().into_bytes(),
        // Half the body: a truncated key in a log line is still a leak.
        body.as_bytes()[..32].to_vec(),
        body.as_bytes()[32..].to_vec(),
    ]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_key_is_stored_logged_or_printed() {
    let dir = data_dir();
    let transcript = Transcript::default();
    let org = json_of(&cli(
        &dir,
        &[
            "org",
            "create",
            "--name",
            "Secrets Org",
            "--owner",
            "owner@example.com",
            "--json",
        ],
        Some(&transcript),
    ));
    let org_id = org["organization"]["id"].as_str().unwrap().to_owned();
    cli(
        &dir,
        &[
            "credits", "grant", "--org", &org_id, "--amount", "50", "--json",
        ],
        Some(&transcript),
    );
    let mut keys = Vec::new();
    // Two keys made by the admin CLI (their one output shows them; it is not scanned).
    for mode in [None, Some("--test")] {
        let mut args = vec![
            "key",
            "create",
            "--org",
            &org_id,
            "--name",
            "cli",
            "--scopes",
            "IMAGE_GENERATION,SCENE_RENDER",
            "--json",
        ];
        args.extend(mode);
        let out = cli(&dir, &args, None);
        keys.push(json_of(&out)["key"].as_str().unwrap().to_owned());
    }

    let server = serve(&dir);
    let http = reqwest::Client::new();
    // A key made through the dashboard route.
    let created: Value = http
        .post(format!("{}/api/keys", server.base))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .json(
            &json!({"organizationId": org_id, "name": "dashboard", "scopes": ["IMAGE_GENERATION"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    keys.push(created["key"].as_str().unwrap().to_owned());
    let dashboard_key_id = created["apiKey"]["id"].as_str().unwrap().to_owned();

    for (n, key) in keys.iter().enumerate() {
        // Used as documented, in both headers, with a replayed Idempotency-Key.
        for _ in 0..2 {
            let resp = http
                .post(format!("{}/api/public/images/generate", server.base))
                .bearer_auth(key)
                .header("idempotency-key", format!("secrets-{n}"))
                .json(&json!({"source": {"type": "text", "text": "a quiet lake"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            transcript.push(&resp.bytes().await.unwrap());
        }
        let resp = http
            .post(format!("{}/api/playground/images", server.base))
            .header("x-api-key", key)
            .json(&json!({"prompts": ["one", "two"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        transcript.push(&resp.bytes().await.unwrap());
        // Malformed on purpose: the server must not echo or log what it refused.
        for bad in [
            format!("{key}0"),
            key[..key.len() - 1].to_owned(),
            format!("Basic {key}"),
        ] {
            let resp = http
                .get(format!("{}/api/playground/images/x", server.base))
                .header("authorization", format!("Bearer {bad}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401);
            transcript.push(&resp.bytes().await.unwrap());
        }
    }
    // The client CLI, and the bulk command waiting for its job.
    let generate = Command::new(BIN)
        .args(["generate", "a red kite", "--json"])
        .env("AI_MEDIA_MAKER_API_KEY", &keys[0])
        .env("CREAPIC_BASE_URL", &server.base)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(generate.status.success());
    transcript.push(&generate.stdout);
    transcript.push(&generate.stderr);
    let bulk = Command::new(BIN)
        .args(["bulk", "a", "b", "--wait", "--json"])
        .env("AI_MEDIA_MAKER_API_KEY", &keys[1])
        .env("CREAPIC_BASE_URL", &server.base)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        bulk.status.success(),
        "{}",
        String::from_utf8_lossy(&bulk.stderr)
    );
    transcript.push(&bulk.stdout);
    transcript.push(&bulk.stderr);
    // A deleted key, refused; the client CLI's error must not show it either.
    let deleted = http
        .delete(format!(
            "{}/api/keys/{dashboard_key_id}?organizationId={org_id}",
            server.base
        ))
        .header("x-dashboard-token", DASHBOARD_TOKEN)
        .header("x-dashboard-user", "owner@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    transcript.push(&deleted.bytes().await.unwrap());
    let refused = Command::new(BIN)
        .args(["generate", "x"])
        .env("AI_MEDIA_MAKER_API_KEY", &keys[2])
        .env("CREAPIC_BASE_URL", &server.base)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    transcript.push(&refused.stdout);
    transcript.push(&refused.stderr);
    // The operator's views.
    cli(
        &dir,
        &["key", "list", "--org", &org_id, "--all", "--json"],
        Some(&transcript),
    );
    cli(
        &dir,
        &["audit", "--org", &org_id, "--format", "csv"],
        Some(&transcript),
    );
    cli(
        &dir,
        &["credits", "ledger", "--org", &org_id, "--json"],
        Some(&transcript),
    );
    // The data directory while the server runs: the WAL and shared memory exist now (after the
    // last connection closes, SQLite may checkpoint the WAL into the database and remove both).
    let mut running = Vec::new();
    files_under(&dir, &mut running);
    for suffix in [".db", ".db-wal", ".db-shm"] {
        assert!(
            running
                .iter()
                .any(|f| f.to_string_lossy().ends_with(suffix)),
            "a *{suffix} file is scanned: {running:?}"
        );
    }
    let mut sources: Vec<(String, Vec<u8>)> = running
        .iter()
        .filter_map(|f| Some((format!("{} (running)", f.display()), std::fs::read(f).ok()?)))
        .collect();
    let log = server.log.clone();
    server.stop();

    // The scan, with the data directory as the stopped server left it.
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with(".db")),
        "the database file is scanned: {files:?}"
    );
    sources.extend(
        files
            .iter()
            .map(|f| (f.display().to_string(), std::fs::read(f).unwrap())),
    );
    let log = log.bytes();
    assert!(
        find(&log, b"DEBUG").is_some(),
        "the server logged at debug level"
    );
    sources.push(("server log".into(), log));
    sources.push(("CLI and HTTP output".into(), transcript.bytes()));
    let mut leaks = Vec::new();
    for key in &keys {
        for needle in needles(key) {
            for (name, bytes) in &sources {
                if let Some(at) = find(bytes, &needle) {
                    leaks.push(format!("{} found in {name} at byte {at}", &key[..12]));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "plaintext keys at rest:\n{}",
        leaks.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn debug_output_of_key_holders_is_redacted() {
    use creapic_core::audit::{Actor, RequestContext};
    use creapic_core::key::{KeyMode, extract_key, parse_key};
    use creapic_core::scope::ScopeSet;
    use creapic_core::store::memory::MemoryStore;
    use creapic_core::{Creapic, KeySpec};

    let core = Creapic::new(Arc::new(MemoryStore::new()));
    let ctx = RequestContext::default();
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org("Debug", owner.id, Actor::Operator, &ctx)
        .await
        .unwrap();
    let mut dumps = Vec::new();
    for mode in [KeyMode::Live, KeyMode::Test] {
        let spec = KeySpec {
            name: "debug".into(),
            scopes: ScopeSet::all(),
            mode,
            expires_at: None,
        };
        let created = core
            .create_key(Actor::User(owner.id), org.id, spec, &ctx)
            .await
            .unwrap();
        let text = created.secret.expose().to_owned();
        let header = format!("Bearer {text}");
        let principal = core
            .authenticate(Some(header.as_bytes()), None)
            .await
            .unwrap();
        let parsed = parse_key(&text).unwrap();
        let extracted = extract_key(None, Some(text.as_bytes())).unwrap();
        let builder = creapic_client::Client::builder()
            .base_url("http://127.0.0.1:9")
            .api_key_text(text.clone());
        let builder_dump = format!("{builder:?}");
        let client = builder.build().unwrap();
        let dump = format!(
            "{created:?}\n{created:#?}\n{:?}\n{principal:?}\n{parsed:?}\n{extracted:?}\n{:?}\n{builder_dump}\n{client:?}",
            created.secret,
            created.secret.digest(),
        );
        // A malformed key in an error.
        let error = parse_key(&format!("{text}!")).unwrap_err();
        let client_error = creapic_client::Client::builder()
            .base_url("http://127.0.0.1:9")
            .api_key_text(format!("{text}!"))
            .build()
            .unwrap_err();
        dumps.push((
            text,
            format!("{dump}\n{error:?}\n{error}\n{client_error:?}\n{client_error}"),
        ));
    }
    for (key, dump) in &dumps {
        assert!(dump.contains(&key[..12]), "the prefix is shown: {dump}");
        for needle in needles(key) {
            assert!(
                find(dump.as_bytes(), &needle).is_none(),
                "Debug shows a key: {dump}"
            );
        }
    }
}
