//! The web console through the built binary and a real browser: `creapic serve` on a fresh
//! store, a person created with `creapic user create … --password-stdin`, and headless Chromium
//! driven over WebDriver (`chromedriver`, started here on a free loopback port) through the
//! keys page — a wrong password refused with a sentence, sign-in, a key added with two scopes
//! and read from the page once, never shown again, used against the API, deleted through the
//! confirmation and refused by the API at once, sign-out, and the sign-in page again — on
//! SQLite and on PostgreSQL (a fresh database of `DATABASE_URL`, dropped after).
//!
//! The members page: owners and admins add, re-role and remove members by the core's rules
//! (the last owner stays, admins touch plain members only), each refusal a sentence.
//!
//! Without a browser, over plain HTTP: forms without or with a wrong CSRF token are 403 with a
//! sentence and change nothing; a person of organization A never sees organization B's keys by
//! URL; a member sees why they cannot manage keys; sign-in attempts are limited per e-mail
//! (429 with a sentence); the pages' security headers and cookie attributes; and
//! `CREAPIC_DASHBOARD_TOKEN` is ignored without `--dev-dashboard-token`.
//!
//! The browser tests need `chromedriver` and Chromium (Debian: `chromium-driver`, `chromium`;
//! or `CREAPIC_CHROMEDRIVER` / `CREAPIC_CHROMIUM`); like the PostgreSQL tests, they fail rather
//! than skip when either is missing. `CREAPIC_SCREENSHOTS=1` saves the screenshots of the
//! SQLite run to `docs/console/*.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sqlx::Connection as _;
use support::{BIN, Serve, spawn_serve};

const PASSWORD: &str = "correct horse battery staple";

// ----- the store a test runs on -----

/// A data directory and, for PostgreSQL, a fresh database (dropped after).
struct Store {
    dir: PathBuf,
    database: Option<(String, String)>,
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl Store {
    fn sqlite() -> Store {
        let dir = temp_dir("console");
        std::fs::create_dir_all(&dir).unwrap();
        Store {
            dir,
            database: None,
        }
    }

    async fn postgres() -> Store {
        let name = format!("creapic_console_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is required: {e}", admin_url()));
        // The name is ours: lowercase letters, digits and underscores.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url();
        let (server, _) = base.rsplit_once('/').unwrap();
        let mut store = Store::sqlite();
        store.database = Some((name.clone(), format!("{server}/{name}")));
        store
    }

    /// `creapic [--database URL] --data-dir DIR ARGS…`, with `stdin` piped in.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut command = Command::new(BIN);
        command.arg("--data-dir").arg(&self.dir);
        if let Some((_, url)) = &self.database {
            command.arg("--database").arg(url);
        }
        command
            .args(args)
            .env_remove("CREAPIC_DATABASE_URL")
            .env_remove("CREAPIC_DASHBOARD_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A new organization (founded by founder@example.com) and its id.
    fn org(&self, name: &str) -> String {
        let org = self.json(
            &[
                "org",
                "create",
                "--name",
                name,
                "--owner",
                "founder@example.com",
                "--json",
            ],
            None,
        );
        org["organization"]["id"].as_str().unwrap().to_owned()
    }

    /// A person with [`PASSWORD`] and `role` in `org`.
    fn person(&self, email: &str, org: &str, role: &str) {
        self.json(
            &[
                "user",
                "create",
                "--email",
                email,
                "--password-stdin",
                "--org",
                org,
                "--role",
                role,
                "--json",
            ],
            Some(PASSWORD),
        );
    }

    fn serve(&self, env: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(BIN);
        command.arg("--data-dir").arg(&self.dir);
        if let Some((_, url)) = &self.database {
            command.arg("--database").arg(url);
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--no-runner"])
            .env_remove("CREAPIC_DATABASE_URL")
            .env_remove("CREAPIC_DASHBOARD_TOKEN")
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        spawn_serve(command)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let Some((name, _)) = self.database.take() else {
            return;
        };
        // A runtime of its own: drop may run outside (or at the end of) the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

fn temp_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("creapic-{what}-{}", uuid::Uuid::now_v7().simple()))
}

// ----- the browser -----

/// A `chromedriver` on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let program =
            std::env::var("CREAPIC_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run `{program}` ({e}): install ChromeDriver and Chromium \
                     (`apt-get install chromium-driver chromium`) or point \
                     CREAPIC_CHROMEDRIVER at it"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let chromium = std::env::var("CREAPIC_CHROMIUM").unwrap_or_else(|_| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("chromium")
                .to_owned()
        });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1200,900",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            }),
        );
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session from chromedriver: {e}"))
    }
}

/// Saves a screenshot to docs/console/NAME.png when `CREAPIC_SCREENSHOTS=1` (and `keep`).
async fn screenshot(browser: &Client, name: &str, keep: bool) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if keep && std::env::var("CREAPIC_SCREENSHOTS").as_deref() == Ok("1") {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

async fn body_text(browser: &Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks the button labelled `text` and waits for the page it leads to.
async fn click_button(browser: &Client, text: &str) {
    let button = browser
        .find(Locator::XPath(&format!(
            "//button[normalize-space()='{text}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("no button {text:?}: {e}"));
    click_and_load(browser, button).await;
}

/// Clicks `element` and waits (at most 15 s) until the page it was on is gone, so what is read
/// next is the new page, never the old one.
async fn click_and_load(browser: &Client, element: fantoccini::elements::Element) {
    let old = browser.find(Locator::Css("html")).await.unwrap();
    element.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "the click led to no new page");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn path_of(browser: &Client) -> String {
    browser.current_url().await.unwrap().path().to_owned()
}

/// The whole flow in the browser; `shots` keeps its screenshots.
async fn browser_flow(store: Store, shots: bool) {
    let org = store.org("Acme Studio");
    store.person("owner@example.com", &org, "owner");
    let server = store.serve(&[]);
    assert!(
        server
            .wait_for_log(
                &format!("console: {}/console/login", server.base),
                Duration::from_secs(5)
            )
            .is_some(),
        "serve prints the console's address: {}",
        server.log_text()
    );
    let driver = Driver::start();
    let browser = driver.browser().await;
    let http = reqwest::Client::new();
    let flow = async {
        // Not signed in: the keys page sends the browser to the sign-in page.
        browser
            .goto(&format!("{}/console/keys", server.base))
            .await
            .unwrap();
        assert_eq!(path_of(&browser).await, "/console/login");
        screenshot(&browser, "login", shots).await;

        // A wrong password: refused, with a sentence.
        fill(&browser, "#email", "owner@example.com").await;
        fill(&browser, "#password", "not the password").await;
        click_button(&browser, "Sign in").await;
        let text = body_text(&browser).await;
        assert!(
            text.contains("The e-mail or the password is wrong."),
            "the refusal is a sentence: {text}"
        );
        assert_eq!(path_of(&browser).await, "/console/login");

        // The right one: the keys page of the person's organization.
        fill(&browser, "#password", PASSWORD).await;
        click_button(&browser, "Sign in").await;
        assert_eq!(path_of(&browser).await, "/console/keys");
        let text = body_text(&browser).await;
        assert!(text.contains("Acme Studio"), "{text}");
        assert!(text.contains("No keys yet."), "{text}");

        // Add a key with two scopes: shown once, with the warning and a working copy button.
        fill(&browser, "#name", "Production").await;
        for scope in ["IMAGE_GENERATION", "SCENE_RENDER"] {
            browser
                .find(Locator::Css(&format!("#scope-{scope}")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
        click_button(&browser, "Add key").await;
        let text = body_text(&browser).await;
        assert!(
            text.contains("Copy your key immediately - you won't be able to see it again."),
            "{text}"
        );
        let key = browser
            .find(Locator::Css("#new-key"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap();
        assert!(key.starts_with("wi_live_") && key.len() == 72, "{key}");
        let copy = browser.find(Locator::Css("button.copy")).await.unwrap();
        assert!(
            copy.is_displayed().await.unwrap(),
            "the script ran under the page's CSP and showed the copy button"
        );
        screenshot(&browser, "key-created", shots).await;

        // Never shown again: the list has its name, prefix and scopes, not the key.
        browser
            .goto(&format!("{}/console/keys?org={org}", server.base))
            .await
            .unwrap();
        let source = browser.source().await.unwrap();
        assert!(!source.contains(&key), "the key is shown exactly once");
        let row = browser
            .find(Locator::XPath(
                "//tr[td[1][normalize-space()='Production']]",
            ))
            .await
            .unwrap();
        let row_text = row.text().await.unwrap();
        assert!(row_text.contains(&key[..12]), "{row_text}");
        assert!(row_text.contains("IMAGE_GENERATION"), "{row_text}");
        assert!(row_text.contains("SCENE_RENDER"), "{row_text}");
        assert!(!row_text.contains("ORGANIZATION_WRITE"), "{row_text}");
        assert!(row_text.contains("Never"), "not used yet: {row_text}");
        screenshot(&browser, "keys", shots).await;

        // The key works.
        let credits = format!("{}/api/public/credits", server.base);
        let answer = http.get(&credits).bearer_auth(&key).send().await.unwrap();
        assert_eq!(answer.status(), 200);

        // Delete it through the confirmation page.
        let delete = row.find(Locator::Css("a.button.danger")).await.unwrap();
        click_and_load(&browser, delete).await;
        assert!(path_of(&browser).await.ends_with("/delete"));
        let text = body_text(&browser).await;
        assert!(text.contains("Delete the key “Production”?"), "{text}");
        click_button(&browser, "Delete").await;
        assert_eq!(path_of(&browser).await, "/console/keys");
        let text = body_text(&browser).await;
        assert!(text.contains("deleted"), "{text}");
        assert!(text.contains("No keys yet."), "{text}");

        // Refused by the API at once.
        let answer = http.get(&credits).bearer_auth(&key).send().await.unwrap();
        assert_eq!(answer.status(), 401);

        // The members page, from the header.
        let members = browser
            .find(Locator::XPath("//nav//a[normalize-space()='Members']"))
            .await
            .unwrap();
        click_and_load(&browser, members).await;
        assert_eq!(path_of(&browser).await, "/console/members");
        let text = body_text(&browser).await;
        assert!(text.contains("owner@example.com (you)"), "{text}");
        screenshot(&browser, "members", shots).await;

        // Sign out: the keys page asks for a sign-in again.
        click_button(&browser, "Sign out").await;
        assert_eq!(path_of(&browser).await, "/console/login");
        browser
            .goto(&format!("{}/console/keys", server.base))
            .await
            .unwrap();
        assert_eq!(path_of(&browser).await, "/console/login");
        let url = browser.current_url().await.unwrap();
        assert_eq!(url.query(), Some("next=%2Fconsole%2Fkeys"));
    };
    let finished = tokio::time::timeout(Duration::from_secs(180), flow).await;
    let _ = browser.close().await;
    assert!(finished.is_ok(), "the browser flow took over 3 minutes");
    drop(server);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_manages_keys_in_a_browser_on_sqlite() {
    browser_flow(Store::sqlite(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_manages_keys_in_a_browser_on_postgres() {
    browser_flow(Store::postgres().await, false).await;
}

// ----- over plain HTTP -----

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs `email` in; the `Set-Cookie` header, checked, and the cookie pair to send back.
async fn sign_in(http: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let answer = http
        .post(format!("{base}/console/login"))
        .form(&[("email", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303, "{email} signs in");
    let set_cookie = answer
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (set_cookie, pair)
}

/// The value of the first `name="csrf"` field of `page`.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..at + 64].to_owned()
}

async fn get_page(http: &reqwest::Client, url: &str, cookie: &str) -> (u16, String) {
    let answer = http.get(url).header("cookie", cookie).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_csrf_token_are_refused_with_a_sentence() {
    let store = Store::sqlite();
    let org = store.org("CSRF Org");
    store.person("owner@example.com", &org, "owner");
    let server = store.serve(&[]);
    let http = no_redirects();
    let (set_cookie, cookie) = sign_in(&http, &server.base, "owner@example.com").await;
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/console"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=86400"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");

    let keys = format!("{}/console/keys", server.base);
    let answer = http
        .get(&keys)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["cache-control"], "no-store");
    let page = answer.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline code"
    );
    let csrf = csrf_of(&page);

    let sends: [(&str, Option<&str>); 3] = [
        ("/console/keys", None),
        ("/console/keys", Some("0".repeat(64).leak())),
        ("/console/logout", Some("not-a-token")),
    ];
    for (path, token) in sends {
        let mut form = vec![
            ("org", org.as_str()),
            ("name", "Sneaky"),
            ("scope", "IMAGE_GENERATION"),
        ];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let answer = http
            .post(format!("{}{path}", server.base))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{path} {token:?}");
        let body = answer.text().await.unwrap();
        assert!(
            body.contains("This form has expired or did not come from this console."),
            "{body}"
        );
        assert!(!body.trim_start().starts_with('{'), "a page, not JSON");
    }
    // Nothing was created, and the session is still alive (the logout was refused).
    let (status, page) = get_page(&http, &keys, &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("No keys yet."), "{page}");

    // With the token the same form works, and shows a new key once.
    let answer = http
        .post(&keys)
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("name", "Honest"),
            ("scope", "IMAGE_GENERATION"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let body = answer.text().await.unwrap();
    assert!(body.contains("wi_live_"), "{body}");

    // No scope: refused with a sentence, nothing created.
    let answer = http
        .post(&keys)
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("name", "None"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("Invalid scopes: choose at least one scope."),
        "{body}"
    );

    // Signed out with the token: the cookie is cleared and the session is gone.
    let answer = http
        .post(format!("{}/console/logout", server.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert!(
        answer.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let answer = http
        .get(&keys)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/console/login?next=%2Fconsole%2Fkeys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_never_sees_another_organizations_keys() {
    let store = Store::sqlite();
    let org_a = store.org("Org A");
    let org_b = store.org("Org B");
    store.person("a@example.com", &org_a, "owner");
    store.person("b@example.com", &org_b, "owner");
    store.person("member@example.com", &org_a, "member");
    let b_key = store.json(
        &[
            "key",
            "create",
            "--org",
            &org_b,
            "--name",
            "B secret key",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
        None,
    );
    let b_key_id = b_key["id"].as_str().unwrap().to_owned();
    let b_secret = b_key["key"].as_str().unwrap().to_owned();
    let server = store.serve(&[]);
    let http = no_redirects();
    let (_, cookie) = sign_in(&http, &server.base, "a@example.com").await;

    let (status, page) = get_page(
        &http,
        &format!("{}/console/keys?org={org_b}", server.base),
        &cookie,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        page.contains("There is no such organization, or you are not a member of it."),
        "{page}"
    );
    assert!(
        !page.contains("B secret key") && !page.contains("Org B"),
        "{page}"
    );

    {
        let id = &b_key_id;
        let (status, page) = get_page(
            &http,
            &format!("{}/console/keys/{id}/delete?org={org_b}", server.base),
            &cookie,
        )
        .await;
        assert_eq!(status, 404, "{page}");
        assert!(!page.contains("B secret key"), "{page}");
        let (_, own) = get_page(&http, &format!("{}/console/keys", server.base), &cookie).await;
        let csrf = csrf_of(&own);
        let answer = http
            .post(format!("{}/console/keys/{id}/delete", server.base))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("org", org_b.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
        // Asking for B's key under A's organization is "no such key" too.
        let answer = http
            .post(format!("{}/console/keys/{id}/delete", server.base))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("org", org_a.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
    }
    {
        let secret = &b_secret;
        let answer = reqwest::Client::new()
            .get(format!("{}/api/public/credits", server.base))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "B's key still works");
    }

    // A plain member of A is told why there is no key list.
    let (_, member) = sign_in(&http, &server.base, "member@example.com").await;
    let (status, page) = get_page(&http, &format!("{}/console/keys", server.base), &member).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("only its owners and admins can add, see or delete API keys"),
        "{page}"
    );
    assert!(!page.contains("Add key"), "{page}");
    let csrf = csrf_of(&page);
    let answer = http
        .post(format!("{}/console/keys", server.base))
        .header("cookie", &member)
        .form(&[
            ("csrf", csrf.as_str()),
            ("org", org_a.as_str()),
            ("name", "Nope"),
            ("scope", "IMAGE_GENERATION"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("Only an owner or admin of this organization may create keys."),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_limited_and_the_dev_token_needs_its_flag() {
    let store = Store::sqlite();
    let org = store.org("Limits Org");
    store.person("owner@example.com", &org, "owner");
    let server = store.serve(&[("CREAPIC_DASHBOARD_TOKEN", "a-dev-token")]);
    assert!(
        server
            .wait_for_log(
                "ignored without --dev-dashboard-token",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        server.log_text()
    );
    let http = no_redirects();

    // The stand-in is off: its headers sign no one in.
    let answer = http
        .get(format!("{}/api/keys?organizationId={org}", server.base))
        .header("x-dashboard-token", "a-dev-token")
        .header("x-dashboard-user", "owner@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);

    // A `next` elsewhere is not followed.
    let answer = http
        .post(format!("{}/console/login", server.base))
        .form(&[
            ("email", "owner@example.com"),
            ("password", PASSWORD),
            ("next", "//evil.example/console/keys"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/console/keys");

    // Successes are free: more sign-ins than the budget of five, all of them let in.
    for _ in 0..6 {
        let _ = sign_in(&http, &server.base, "owner@example.com").await;
    }
    // Five failures spend the e-mail's budget.
    for _ in 0..5 {
        let answer = http
            .post(format!("{}/console/login", server.base))
            .form(&[
                ("email", "owner@example.com"),
                ("password", "wrong password!"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
    }
    let answer = http
        .post(format!("{}/console/login", server.base))
        .form(&[("email", "OWNER@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 429, "even the right password, once spent");
    assert!(answer.headers().contains_key("retry-after"));
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("Too many sign-in attempts for this account or from this address."),
        "{body}"
    );
    // Another account from the same address still signs in.
    store.person("other@example.com", &org, "member");
    let (_, _) = sign_in(&http, &server.base, "other@example.com").await;

    // An unknown console page is a page too.
    let (status, page) =
        get_page(&http, &format!("{}/console/nothing-here", server.base), "").await;
    assert_eq!(status, 404);
    assert!(
        page.contains("There is no such page in the console."),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_manage_members_by_the_core_rules() {
    let store = Store::sqlite();
    let org = store.org("Members Org");
    store.person("owner@example.com", &org, "owner");
    store.person("admin@example.com", &org, "admin");
    let server = store.serve(&[]);
    let http = no_redirects();
    let members = format!("{}/console/members?org={org}", server.base);
    let (_, owner) = sign_in(&http, &server.base, "owner@example.com").await;
    let (status, page) = get_page(&http, &members, &owner).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("owner@example.com") && page.contains("admin@example.com"),
        "{page}"
    );
    let csrf = csrf_of(&page);

    // The owner adds a new person as a member.
    let answer = http
        .post(format!("{}/console/members", server.base))
        .header("cookie", &owner)
        .form(&[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("email", "new@example.com"),
            ("role", "member"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with("&done=added"), "{location}");
    let (_, page) = get_page(&http, &format!("{}{location}", server.base), &owner).await;
    assert!(
        page.contains("new@example.com") && page.contains("Member added."),
        "{page}"
    );
    let row = |page: &str, email: &str| -> String {
        let at = page.find(&format!("<td>{email}")).unwrap();
        let start = page[..at].rfind("data-member=\"").unwrap() + "data-member=\"".len();
        page[start..start + 36].to_owned()
    };
    let new_id = row(&page, "new@example.com");
    let owner_id = row(&page, "owner@example.com");

    // Adding them again: a sentence, 409.
    let answer = http
        .post(format!("{}/console/members", server.base))
        .header("cookie", &owner)
        .form(&[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("email", "new@example.com"),
            ("role", "member"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("The user is already a member of this organization.")
    );

    // Once the founder is gone, the last owner cannot demote themselves.
    let founder_id = row(&page, "founder@example.com");
    let answer = http
        .post(format!(
            "{}/console/members/{founder_id}/remove",
            server.base
        ))
        .header("cookie", &owner)
        .form(&[("csrf", csrf.as_str()), ("org", org.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let answer = http
        .post(format!("{}/console/members/{owner_id}/role", server.base))
        .header("cookie", &owner)
        .form(&[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("role", "member"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("An organization must keep at least one owner")
    );

    // An admin may not touch the owner (403, a sentence), but removes a plain member after
    // the confirmation page.
    let (_, admin) = sign_in(&http, &server.base, "admin@example.com").await;
    let (_, page) = get_page(&http, &members, &admin).await;
    let admin_csrf = csrf_of(&page);
    let answer = http
        .post(format!("{}/console/members/{owner_id}/role", server.base))
        .header("cookie", &admin)
        .form(&[
            ("csrf", admin_csrf.as_str()),
            ("org", org.as_str()),
            ("role", "member"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("Only an owner or admin")
    );
    let (status, page) = get_page(
        &http,
        &format!("{}/console/members/{new_id}/remove?org={org}", server.base),
        &admin,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Remove new@example.com from Members Org?"),
        "{page}"
    );
    let answer = http
        .post(format!("{}/console/members/{new_id}/remove", server.base))
        .header("cookie", &admin)
        .form(&[("csrf", admin_csrf.as_str()), ("org", org.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let (_, page) = get_page(&http, &format!("{}{location}", server.base), &owner).await;
    assert!(
        !page.contains("new@example.com") && page.contains("Member removed."),
        "{page}"
    );

    // Without the CSRF token nothing changes.
    let answer = http
        .post(format!("{}/console/members", server.base))
        .header("cookie", &owner)
        .form(&[
            ("org", org.as_str()),
            ("email", "x@example.com"),
            ("role", "owner"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
}
