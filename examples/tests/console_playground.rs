//! The console's Playground through the built binary and a real browser: `creapic serve` (with
//! its job runner) on a fresh store, credits granted with `creapic credits grant`, and a plain
//! member of the organization signed in — no API key anywhere.
//!
//! The member submits three prompts as a bulk job; the job's page follows the runner by itself
//! (the console's script swaps the progress section in; the page is never reloaded) until
//! "3 of 3 done", with three thumbnails whose links load as images; the balance dropped by
//! exactly three bulk images. The same form sent again over HTTP (same form id, the session's
//! cookie and CSRF token) answers the same job and charges nothing. One image from text shows
//! the image and the composed JSON prompt, charged once. A job of the bulk limit canceled at
//! once refunds every image not yet made. An organization with no credits shows the 402 as a
//! sentence; too many prompts the 422; another organization's job is not found by URL.
//!
//! On SQLite and on PostgreSQL (a fresh database of `DATABASE_URL`, dropped after); the browser
//! tests need `chromedriver` and Chromium, and fail rather than skip without them.
//! `CREAPIC_SCREENSHOTS=1` saves the SQLite run's job page to `docs/console/playground.png`
//! and the playground with one generated image to `docs/console/playground-image.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;
use support::browser::{
    Driver, assert_image, body_text, click_and_load, click_button, fill, path_of, screenshot,
    thumbnail_links, wait_for_text, within,
};
use support::console_http::{csrf_of, get_page, no_redirects, post_form};
use support::store::{PASSWORD, Store};

/// What one image of a bulk job costs (the kit's default pricing, which `creapic serve` uses).
fn bulk_price() -> u64 {
    creapic_server_kit::Pricing::default().bulk_image
}

/// What one standard image costs.
fn image_price() -> u64 {
    creapic_server_kit::Pricing::default().image_standard
}

/// The most prompts a job takes (the kit's default limit).
fn prompts_max() -> usize {
    creapic_server_kit::Limits::default().prompts_max
}

/// `n` credits as the console writes it.
fn credits(n: u64) -> String {
    if n == 1 {
        "1 credit".to_owned()
    } else {
        format!("{n} credits")
    }
}

fn balance(store: &Store, org: &str) -> u64 {
    store.json(&["credits", "balance", "--org", org, "--json"], None)["balance"]
        .as_u64()
        .unwrap()
}

fn grant(store: &Store, org: &str, amount: u64) {
    store.json(
        &[
            "credits",
            "grant",
            "--org",
            org,
            "--amount",
            &amount.to_string(),
            "--json",
        ],
        None,
    );
}

/// The value of the hidden field `name` of the form posting to `action` (a path suffix).
async fn hidden(browser: &Client, action: &str, name: &str) -> String {
    browser
        .find(Locator::Css(&format!(
            "form[action$='{action}'] input[name='{name}']"
        )))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap()
}

async fn playground_flow(store: Store, shots: bool) {
    let org = store.org("Acme Studio");
    let empty = store.org("Empty Studio");
    store.person("member@example.com", &org, "member");
    store.json(
        &[
            "member",
            "add",
            "--org",
            &empty,
            "--email",
            "member@example.com",
            "--role",
            "member",
            "--json",
        ],
        None,
    );
    let start = 200;
    grant(&store, &org, start);
    let server = store.serve_with(&[], &[]);
    let base = server.base.clone();
    let driver = Driver::start();
    let browser = driver.browser().await;
    let http = no_redirects();
    let flow = async {
        // Sign in on the way to the playground.
        browser
            .goto(&format!("{base}/console/playground?org={org}"))
            .await
            .unwrap();
        assert_eq!(path_of(&browser).await, "/console/login");
        fill(&browser, "#email", "member@example.com").await;
        fill(&browser, "#password", PASSWORD).await;
        click_button(&browser, "Sign in").await;
        assert_eq!(path_of(&browser).await, "/console/playground");
        let text = body_text(&browser).await;
        assert!(
            text.contains(&format!("balance {}", credits(start))),
            "{text}"
        );
        assert!(text.contains("No jobs yet."), "{text}");

        // Three prompts, one per line, as one bulk job.
        let prompts = "A lighthouse at dusk, watercolor\nA harbour in fog\nA gull over waves";
        fill(&browser, "#prompts", prompts).await;
        let nonce = hidden(&browser, "/playground", "form").await;
        let csrf = hidden(&browser, "/playground", "csrf").await;
        click_button(&browser, "Generate images").await;
        let job_path = path_of(&browser).await;
        assert!(
            job_path.starts_with("/console/playground/jobs/"),
            "{job_path}"
        );
        let job_id = job_path.rsplit('/').next().unwrap().to_owned();

        // The page follows the job by itself: the same document, never reloaded.
        let page = browser.find(Locator::Css("html")).await.unwrap();
        let text = wait_for_text(&browser, "3 of 3 done", Duration::from_secs(60)).await;
        assert!(
            page.tag_name().await.is_ok(),
            "the script swapped the progress in; the page was not reloaded"
        );
        assert!(text.contains("completed"), "{text}");
        assert!(text.contains("3 made, 0 failed, 0 canceled"), "{text}");
        let thumbs = thumbnail_links(&browser).await;
        assert_eq!(thumbs.len(), 3, "{text}");
        for url in &thumbs {
            assert_image(&http, url).await;
        }
        assert!(
            browser
                .find(Locator::XPath("//button[normalize-space()='Cancel']"))
                .await
                .is_err(),
            "no Cancel on a finished job"
        );
        assert_eq!(balance(&store, &org), start - 3 * bulk_price());
        screenshot(&browser, "playground", shots).await;

        // The same form again (a reload, a double click), over HTTP with the browser's session:
        // the same job, nothing charged.
        let session = browser.get_named_cookie("creapic_session").await.unwrap();
        let cookie = format!("creapic_session={}", session.value());
        let again = post_form(
            &http,
            format!("{base}/console/playground"),
            &cookie,
            &[
                ("csrf", csrf.as_str()),
                ("org", org.as_str()),
                ("form", nonce.as_str()),
                ("prompts", prompts),
            ],
        )
        .await;
        assert_eq!(again.status(), 303);
        assert_eq!(
            again.headers()["location"].to_str().unwrap(),
            format!("{job_path}?org={org}")
        );
        assert_eq!(balance(&store, &org), start - 3 * bulk_price());
        let (status, listing) = get_page(
            &http,
            &format!("{base}/console/playground?org={org}"),
            &cookie,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            listing.matches("/playground/jobs/").count(),
            1,
            "one job: {listing}"
        );
        assert!(listing.contains(&job_id), "{listing}");
        let after_bulk = start - 3 * bulk_price();

        // One image from text: the image, the credits charged and the composed JSON prompt.
        let back = browser
            .find(Locator::XPath("//nav//a[normalize-space()='Playground']"))
            .await
            .unwrap();
        click_and_load(&browser, back).await;
        fill(
            &browser,
            "#prompt",
            "A red fox in fresh snow, morning light",
        )
        .await;
        click_button(&browser, "Generate image").await;
        let text = body_text(&browser).await;
        assert!(
            text.contains(&format!("{} charged", credits(image_price()))),
            "{text}"
        );
        let composed = browser
            .find(Locator::Css("pre.json"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prompt: serde_json::Value = serde_json::from_str(&composed)
            .unwrap_or_else(|e| panic!("the composed prompt is JSON ({e}): {composed}"));
        assert!(
            prompt.to_string().contains("red fox"),
            "composed from the text: {prompt}"
        );
        let image = browser
            .find(Locator::Css("img.result"))
            .await
            .unwrap()
            .prop("src")
            .await
            .unwrap()
            .unwrap();
        assert_image(&http, &image).await;
        browser
            .execute(
                "document.querySelector('.generated').scrollIntoView();",
                vec![],
            )
            .await
            .unwrap();
        screenshot(&browser, "playground-image", shots).await;
        assert_eq!(balance(&store, &org), after_bulk - image_price());
        let after_single = after_bulk - image_price();

        // A job of the bulk limit, canceled at once: every image not made is refunded.
        let many: Vec<String> = (1..=prompts_max())
            .map(|n| format!("A tiny island, study {n}"))
            .collect();
        browser
            .execute(
                "document.getElementById('prompts').value = arguments[0];",
                vec![json!(many.join("\n"))],
            )
            .await
            .unwrap();
        click_button(&browser, "Generate images").await;
        click_button(&browser, "Cancel").await;
        let text = wait_for_text(&browser, "canceled", Duration::from_secs(10)).await;
        let made = thumbnail_links(&browser).await.len();
        assert!(made < prompts_max(), "canceled before the end: {text}");
        assert!(
            text.contains(&format!("{made} made")),
            "every image made is shown: {text}"
        );
        assert_eq!(
            balance(&store, &org),
            after_single - made as u64 * bulk_price(),
            "only the images made are paid"
        );

        // Another organization's job by URL: not found, as a sentence.
        let (status, page) = get_page(
            &http,
            &format!("{base}/console/playground/jobs/{job_id}?org={empty}"),
            &cookie,
        )
        .await;
        assert_eq!(status, 404);
        assert!(
            page.contains("There is no such job in this organization."),
            "{page}"
        );

        // No credits: the 402 as a sentence, nothing queued.
        browser
            .goto(&format!("{base}/console/playground?org={empty}"))
            .await
            .unwrap();
        fill(&browser, "#prompts", "A lighthouse").await;
        click_button(&browser, "Generate images").await;
        let text = body_text(&browser).await;
        assert!(
            text.contains("Insufficient credits: no credits remaining"),
            "{text}"
        );
        assert!(text.contains("No jobs yet."), "{text}");
        fill(&browser, "#prompt", "A lighthouse").await;
        click_button(&browser, "Generate image").await;
        let text = body_text(&browser).await;
        assert!(
            text.contains("Insufficient credits: no credits remaining"),
            "{text}"
        );
        assert_eq!(balance(&store, &empty), 0);

        // Too many prompts: 422, as a sentence, nothing charged.
        let (_, page) = get_page(
            &http,
            &format!("{base}/console/playground?org={org}"),
            &cookie,
        )
        .await;
        let too_many = vec!["A gull"; prompts_max() + 1].join("\n");
        let answer = post_form(
            &http,
            format!("{base}/console/playground"),
            &cookie,
            &[
                ("csrf", csrf_of(&page).as_str()),
                ("org", org.as_str()),
                ("form", nonce_of(&page).as_str()),
                ("prompts", too_many.as_str()),
            ],
        )
        .await;
        assert_eq!(answer.status(), 422);
        let page = answer.text().await.unwrap();
        assert!(
            page.contains(&format!(
                "Too many prompts: a job takes at most {}, one per line.",
                prompts_max()
            )),
            "{page}"
        );
        assert_eq!(
            balance(&store, &org),
            after_single - made as u64 * bulk_price()
        );
    };
    within(&browser, Duration::from_secs(240), flow).await;
    drop(server);
    drop(store);
}

/// The first form id of `page`.
fn nonce_of(page: &str) -> String {
    let marker = "name=\"form\" value=\"";
    let at = page.find(marker).unwrap() + marker.len();
    page[at..at + 32].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_runs_the_playground_in_a_browser_on_sqlite() {
    playground_flow(Store::sqlite(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_runs_the_playground_in_a_browser_on_postgres() {
    playground_flow(Store::postgres().await, false).await;
}
