//! The console's Credits and Audit log pages through the built binary and a real browser, on
//! SQLite and on PostgreSQL: credits granted with `creapic credits grant` show as the balance
//! and a ledger row; a key added on the keys page pays for a generation through the API, and
//! the credits page shows the new balance, the hold and capture rows and a bar for today in
//! the server-drawn chart; the audit page lists the key's creation with the browser's address
//! (`127.0.0.1`), filters by action, and its "Export CSV" link downloads, with the session
//! cookie, the filtered events as CSV.
//!
//! Over plain HTTP: a person never reads another organization's credits or audit log by URL
//! (404), a plain member gets the audit log's 403 sentence (but reads the credits), and a
//! malformed date or an unknown action is a 400 sentence.
//!
//! `CREAPIC_SCREENSHOTS=1` saves `docs/console/credits.png` and `docs/console/audit.png` from
//! the SQLite run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;
use support::browser::{Driver, click_and_load, click_button, fill, path_of, screenshot, within};
use support::console_http::{get_page, no_redirects, sign_in};
use support::store::{PASSWORD, Store};

/// The credits `creapic credits grant` gives the organization.
const GRANTED: u64 = 100;

/// The text of the element `css`.
async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Every bar of the usage chart: (day, credits spent, height).
async fn bars(browser: &Client) -> Vec<(String, u64, f64)> {
    let mut out = Vec::new();
    for bar in browser
        .find_all(Locator::Css("svg.chart rect.bar"))
        .await
        .unwrap()
    {
        let day = bar.attr("data-day").await.unwrap().unwrap();
        let spent = bar
            .attr("data-spent")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        let height = bar.attr("height").await.unwrap().unwrap().parse().unwrap();
        out.push((day, spent, height));
    }
    out
}

/// The text of every body row of the table `table_css`.
async fn table_rows(browser: &Client, table_css: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for row in browser
        .find_all(Locator::Css(&format!("{table_css} tbody tr")))
        .await
        .unwrap()
    {
        rows.push(row.text().await.unwrap());
    }
    rows
}

async fn pages_flow(store: Store, shots: bool) {
    let org = store.org("Acme Studio");
    store.person("owner@example.com", &org, "owner");
    let granted = store.json(
        &[
            "credits",
            "grant",
            "--org",
            &org,
            "--amount",
            &GRANTED.to_string(),
            "--json",
        ],
        None,
    );
    assert_eq!(granted["balance"], GRANTED);
    let server = store.serve(&[]);
    let driver = Driver::start();
    let browser = driver.browser().await;
    let http = reqwest::Client::new();
    let flow = async {
        // The credits page asks for a sign-in and comes back to it.
        browser
            .goto(&format!("{}/console/credits?org={org}", server.base))
            .await
            .unwrap();
        assert_eq!(path_of(&browser).await, "/console/login");
        fill(&browser, "#email", "owner@example.com").await;
        fill(&browser, "#password", PASSWORD).await;
        click_button(&browser, "Sign in").await;
        assert_eq!(path_of(&browser).await, "/console/credits");
        assert_eq!(text_of(&browser, "#balance").await, GRANTED.to_string());
        assert_eq!(text_of(&browser, "#held").await, "0");
        let rows = table_rows(&browser, "table.ledger").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(
            rows[0].contains("grant") && rows[0].contains(&format!("+{GRANTED}")),
            "{rows:?}"
        );
        let before = bars(&browser).await;
        assert_eq!(before.len(), 30, "30 days, every one drawn");
        assert!(before.iter().all(|(_, spent, h)| *spent == 0 && *h == 0.0));
        let current = browser
            .find(Locator::Css("nav a[aria-current='page']"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(current, "Credits");

        // A key from the keys page pays for a generation through the API.
        let keys = browser
            .find(Locator::XPath("//nav//a[normalize-space()='API keys']"))
            .await
            .unwrap();
        click_and_load(&browser, keys).await;
        fill(&browser, "#name", "Production").await;
        browser
            .find(Locator::Css("#scope-IMAGE_GENERATION"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        click_button(&browser, "Add key").await;
        let key = browser
            .find(Locator::Css("#new-key"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap();
        let answer = http
            .post(format!("{}/api/public/images/generate", server.base))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "source": {"type": "text", "text": "A lighthouse at dawn"},
                "aspectRatio": "1:1",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let generated: Value = answer.json().await.unwrap();
        let paid = generated["generation"]["tokensUsed"].as_u64().unwrap();
        assert!(paid > 0, "{generated}");
        assert_eq!(generated["tokens"], GRANTED - paid, "the balance left");

        // The credits page: the new balance, the hold and its capture, today's bar.
        let credits = browser
            .find(Locator::XPath("//nav//a[normalize-space()='Credits']"))
            .await
            .unwrap();
        click_and_load(&browser, credits).await;
        assert_eq!(
            text_of(&browser, "#balance").await,
            (GRANTED - paid).to_string()
        );
        assert_eq!(text_of(&browser, "#held").await, "0");
        let rows = table_rows(&browser, "table.ledger").await;
        assert!(rows.len() >= 3, "grant, hold, capture: {rows:?}");
        assert!(
            rows.iter()
                .any(|r| r.contains("hold") && r.contains(&format!("−{paid}"))),
            "{rows:?}"
        );
        assert!(
            rows.iter().any(|r| r.contains("capture")
                && r.contains(&format!("0 ({paid} final)"))
                && r.contains(&(GRANTED - paid).to_string())),
            "{rows:?}"
        );
        let after = bars(&browser).await;
        let (today, spent, height) = after.last().unwrap().clone();
        assert_eq!(spent, paid, "today's bar is what the generation cost");
        assert!(height > 0.0, "today's bar is drawn");
        assert!(after[..29].iter().all(|(_, s, _)| *s == 0), "{after:?}");
        let last_entry = browser
            .find(Locator::Css("table.ledger tbody tr:last-child time"))
            .await
            .unwrap()
            .attr("datetime")
            .await
            .unwrap()
            .unwrap();
        assert!(last_entry.starts_with(&today), "{last_entry} is on {today}");
        // The chart's description is not drawn: read its text content.
        let described = browser
            .find(Locator::Css("#chart-desc"))
            .await
            .unwrap()
            .prop("textContent")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(
            described.contains(&format!("{paid} credits spent")),
            "{described}"
        );
        screenshot(&browser, "credits", shots).await;

        // The audit page: the key's creation from the browser's address.
        let audit = browser
            .find(Locator::XPath("//nav//a[normalize-space()='Audit log']"))
            .await
            .unwrap();
        click_and_load(&browser, audit).await;
        assert_eq!(path_of(&browser).await, "/console/audit");
        let rows = table_rows(&browser, "table.audit").await;
        let created: Vec<_> = rows.iter().filter(|r| r.contains("key.created")).collect();
        assert_eq!(created.len(), 1, "{rows:?}");
        assert!(created[0].contains("127.0.0.1"), "{created:?}");
        assert!(
            created[0].contains("owner@example.com"),
            "the actor by e-mail: {created:?}"
        );
        assert!(
            created[0].contains(&key[..12]),
            "the key's prefix: {created:?}"
        );
        assert!(
            rows.iter().any(|r| r.contains("credits.granted")),
            "{rows:?}"
        );
        screenshot(&browser, "audit", shots).await;

        // Filtered by action: only the key's creation.
        browser
            .find(Locator::Css("#action"))
            .await
            .unwrap()
            .select_by_value("key.created")
            .await
            .unwrap();
        click_button(&browser, "Filter").await;
        let url = browser.current_url().await.unwrap();
        assert!(url.query().unwrap().contains("action=key.created"), "{url}");
        let rows = table_rows(&browser, "table.audit").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(rows[0].contains("key.created"), "{rows:?}");

        // The export, with the same filter, downloaded with the session cookie.
        let href = browser
            .find(Locator::LinkText("Export CSV"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        assert!(href.contains("action=key.created"), "{href}");
        let cookie = browser.get_named_cookie("creapic_session").await.unwrap();
        let answer = http
            .get(format!("{}{href}", server.base))
            .header("cookie", format!("creapic_session={}", cookie.value()))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let disposition = answer.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            disposition.starts_with("attachment;") && disposition.contains(".csv"),
            "{disposition}"
        );
        let csv = answer.text().await.unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "id,at,action,actor,ip,user_agent,key_id,key_prefix,detail"
        );
        assert_eq!(lines.len(), 2, "the header and the one key.created: {csv}");
        assert!(
            lines[1].contains(",key.created,") && lines[1].contains(",127.0.0.1,"),
            "{csv}"
        );
        // Without the session the export is the sign-in page, not the log.
        let answer = no_redirects()
            .get(format!("{}{href}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 303);
    };
    within(&browser, Duration::from_secs(180), flow).await;
    drop(server);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_and_audit_pages_in_a_browser_on_sqlite() {
    pages_flow(Store::sqlite(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_and_audit_pages_in_a_browser_on_postgres() {
    pages_flow(Store::postgres().await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_and_audit_are_bounded_by_organization_and_role() {
    let store = Store::sqlite();
    let org_a = store.org("Org A");
    let org_b = store.org("Org B");
    store.person("a@example.com", &org_a, "owner");
    store.person("member@example.com", &org_a, "member");
    store.json(
        &[
            "credits", "grant", "--org", &org_b, "--amount", "777", "--json",
        ],
        None,
    );
    let server = store.serve(&[]);
    let http = no_redirects();
    let base = &server.base;
    let (_, owner) = sign_in(&http, base, "a@example.com").await;

    // Another organization's pages, by URL: 404, and nothing of it shown.
    for path in [
        format!("/console/credits?org={org_b}"),
        format!("/console/audit?org={org_b}"),
        format!("/console/audit.csv?org={org_b}"),
    ] {
        let (status, page) = get_page(&http, &format!("{base}{path}"), &owner).await;
        assert_eq!(status, 404, "{path}: {page}");
        assert!(
            page.contains("There is no such organization, or you are not a member of it."),
            "{path}: {page}"
        );
        assert!(
            !page.contains("777") && !page.contains("Org B"),
            "{path}: {page}"
        );
    }
    // Their own: 200.
    let (status, page) =
        get_page(&http, &format!("{base}/console/audit?org={org_a}"), &owner).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("org.created") || page.contains("member.changed"),
        "{page}"
    );

    // Bad filters: a sentence, 400.
    for (query, sentence) in [
        (
            "from=2026-13-45",
            "The from date must be a day written YYYY-MM-DD.",
        ),
        (
            "to=yesterday",
            "The to date must be a day written YYYY-MM-DD.",
        ),
        (
            "action=key.exploded",
            "The action is not an action of the audit log.",
        ),
    ] {
        for path in ["audit", "audit.csv"] {
            let url = format!("{base}/console/{path}?org={org_a}&{query}");
            let (status, page) = get_page(&http, &url, &owner).await;
            assert_eq!(status, 400, "{url}: {page}");
            assert!(page.contains(sentence), "{url}: {page}");
        }
    }

    // A plain member reads the credits but not the audit log.
    let (_, member) = sign_in(&http, base, "member@example.com").await;
    let (status, page) = get_page(
        &http,
        &format!("{base}/console/credits?org={org_a}"),
        &member,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    for path in ["audit", "audit.csv"] {
        let (status, page) = get_page(
            &http,
            &format!("{base}/console/{path}?org={org_a}"),
            &member,
        )
        .await;
        assert_eq!(status, 403, "{path}: {page}");
        assert!(
            page.contains("Only an owner or admin of this organization may read the audit log."),
            "{path}: {page}"
        );
        assert!(!page.contains("org.created"), "{page}");
    }
}
