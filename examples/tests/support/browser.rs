//! A real browser for the console tests: `chromedriver` on a free loopback port (killed on
//! drop), a headless Chromium session, and the few steps a test takes in it — fill a field,
//! click a button and wait for the page it leads to, read the page's text and path, save a
//! screenshot.
//!
//! The tests fail rather than skip when either program is missing (Debian: `chromium-driver`,
//! `chromium`; or `CREAPIC_CHROMEDRIVER` / `CREAPIC_CHROMIUM`), like the PostgreSQL tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Longest a click may take to lead to a new page.
pub const PAGE_LOAD_MAX: Duration = Duration::from_secs(15);

/// A `chromedriver` on a free loopback port; killed on drop.
pub struct Driver {
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
    /// Starts `chromedriver` (or `CREAPIC_CHROMEDRIVER`) and waits (20 s at most) until it
    /// listens.
    pub fn start() -> Driver {
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

    /// A headless Chromium session, 1200×900.
    pub async fn browser(&self) -> Client {
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
pub async fn screenshot(browser: &Client, name: &str, keep: bool) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if keep && std::env::var("CREAPIC_SCREENSHOTS").as_deref() == Ok("1") {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// The page's visible text.
pub async fn body_text(browser: &Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Replaces the text of the field `css` with `text`.
pub async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks the button labelled `text` and waits for the page it leads to.
pub async fn click_button(browser: &Client, text: &str) {
    let button = browser
        .find(Locator::XPath(&format!(
            "//button[normalize-space()='{text}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("no button {text:?}: {e}"));
    click_and_load(browser, button).await;
}

/// Clicks `element` and waits (at most [`PAGE_LOAD_MAX`]) until the page it was on is gone, so
/// what is read next is the new page, never the old one.
pub async fn click_and_load(browser: &Client, element: fantoccini::elements::Element) {
    let old = browser.find(Locator::Css("html")).await.unwrap();
    element.click().await.unwrap();
    let deadline = Instant::now() + PAGE_LOAD_MAX;
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "the click led to no new page");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The path of the page the browser shows.
pub async fn path_of(browser: &Client) -> String {
    browser.current_url().await.unwrap().path().to_owned()
}

/// Waits (at most `max`) until the page's text contains `needle`, without reloading it.
pub async fn wait_for_text(browser: &Client, needle: &str, max: Duration) -> String {
    let deadline = Instant::now() + max;
    loop {
        let text = body_text(browser).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the page: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every thumbnail's link of the page.
pub async fn thumbnail_links(browser: &Client) -> Vec<String> {
    let mut links = Vec::new();
    for a in browser.find_all(Locator::Css("ul.thumbs a")).await.unwrap() {
        let img = a.find(Locator::Css("img")).await.unwrap();
        let src = img.attr("src").await.unwrap().unwrap();
        let href = a.prop("href").await.unwrap().unwrap();
        assert!(href.ends_with(&src) || href == src, "{href} opens {src}");
        links.push(href);
    }
    links
}

/// `url` loads as an image (200 and an image content type), without any credentials.
pub async fn assert_image(http: &reqwest::Client, url: &str) {
    let answer = http.get(url).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{url}");
    let kind = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("image/"), "{url}: {kind}");
    assert!(!answer.bytes().await.unwrap().is_empty());
}

/// Runs a test's browser `flow` for at most `max`, then closes `browser` whether or not it
/// finished (a hung page never leaves Chromium behind), and fails the test when time ran out.
pub async fn within(browser: &Client, max: Duration, flow: impl std::future::Future<Output = ()>) {
    let finished = tokio::time::timeout(max, flow).await;
    let _ = browser.clone().close().await;
    assert!(
        finished.is_ok(),
        "the browser flow took over {} s",
        max.as_secs()
    );
}
