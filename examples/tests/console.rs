//! The web console through the built binary and a real browser: `creapic serve` on a fresh
//! store, a person created with `creapic user create … --password-stdin`, and headless Chromium
//! driven over WebDriver (`chromedriver`, started here on a free loopback port) through a new
//! user's whole journey — a wrong password refused with a sentence, sign-in, a key added with
//! two scopes and read from the page once, the page reloaded (the form is not sent twice and
//! the key is not shown again), the key used against the API, deleted through the confirmation
//! and refused by the API at once, a bulk job from the Playground followed to completion with
//! its images, the audit log showing the key's creation and deletion with the browser's IP,
//! sign-out, and every page asking for a sign-in again — on SQLite and on PostgreSQL (a fresh
//! database of `DATABASE_URL`, dropped after).
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

use std::time::Duration;

use fantoccini::Locator;
use support::browser::{
    Driver, assert_image, body_text, click_and_load, click_button, fill, path_of, screenshot,
    thumbnail_links, wait_for_text, within,
};
use support::console_http::{csrf_of, get_page, no_redirects, post_form, sign_in};
use support::store::{PASSWORD, Store};

/// The whole flow in the browser; `shots` keeps its screenshots.
async fn browser_flow(store: Store, shots: bool) {
    // The operator's part, all before `creapic user create`: after it, the person uses the
    // browser only.
    let org = store.org("Acme Studio");
    store.json(
        &[
            "credits", "grant", "--org", &org, "--amount", "10", "--json",
        ],
        None,
    );
    store.person("owner@example.com", &org, "owner");
    // With its job runner: the journey ends with a finished bulk job.
    let server = store.serve_with(&[], &[]);
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

        // Reloading that answer sends its form again: nothing more is added, and the key is
        // not shown again.
        browser.refresh().await.unwrap();
        let text = body_text(&browser).await;
        assert!(
            text.contains("This form was already sent and its key was created then."),
            "{text}"
        );
        assert!(!browser.source().await.unwrap().contains(&key));

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

        // A bulk job from the Playground, followed to completion, with its images.
        let playground = browser
            .find(Locator::XPath("//nav//a[normalize-space()='Playground']"))
            .await
            .unwrap();
        click_and_load(&browser, playground).await;
        assert_eq!(path_of(&browser).await, "/console/playground");
        fill(
            &browser,
            "#prompts",
            "A lighthouse at dusk\nA harbour in fog",
        )
        .await;
        click_button(&browser, "Generate images").await;
        let job_page = path_of(&browser).await;
        assert!(
            job_page.starts_with("/console/playground/jobs/"),
            "{job_page}"
        );
        wait_for_text(&browser, "2 of 2 done", Duration::from_secs(60)).await;
        let thumbs = thumbnail_links(&browser).await;
        assert_eq!(thumbs.len(), 2);
        for url in &thumbs {
            assert_image(&http, url).await;
        }

        // The audit log: the key's creation and deletion, by this person, from this browser's
        // address.
        let audit = browser
            .find(Locator::XPath("//nav//a[normalize-space()='Audit log']"))
            .await
            .unwrap();
        click_and_load(&browser, audit).await;
        assert_eq!(path_of(&browser).await, "/console/audit");
        for action in ["key.created", "key.deleted"] {
            let row = browser
                .find(Locator::XPath(&format!(
                    "//tr[td[2][normalize-space()='{action}']]"
                )))
                .await
                .unwrap_or_else(|_| panic!("no {action} row"));
            let text = row.text().await.unwrap();
            assert!(text.contains("127.0.0.1"), "{action}: {text}");
            assert!(text.contains("owner@example.com"), "{action}: {text}");
            assert!(text.contains(&key[..12]), "{action}: {text}");
        }

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

        // Sign out: every page asks for a sign-in again.
        click_button(&browser, "Sign out").await;
        assert_eq!(path_of(&browser).await, "/console/login");
        for page in [
            "/console/credits".to_owned(),
            "/console/playground".to_owned(),
            job_page.clone(),
            "/console/audit".to_owned(),
            "/console/members".to_owned(),
        ] {
            browser
                .goto(&format!("{}{page}?org={org}", server.base))
                .await
                .unwrap();
            assert_eq!(path_of(&browser).await, "/console/login", "{page}");
        }
        browser
            .goto(&format!("{}/console/keys", server.base))
            .await
            .unwrap();
        assert_eq!(path_of(&browser).await, "/console/login");
        let url = browser.current_url().await.unwrap();
        assert_eq!(url.query(), Some("next=%2Fconsole%2Fkeys"));
    };
    within(&browser, Duration::from_secs(180), flow).await;
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
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
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
        let answer = post_form(&http, format!("{}{path}", server.base), &cookie, &form).await;
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
    let answer = post_form(
        &http,
        &keys,
        &cookie,
        &[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("name", "Honest"),
            ("scope", "IMAGE_GENERATION"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 201);
    let body = answer.text().await.unwrap();
    assert!(body.contains("wi_live_"), "{body}");

    // No scope: refused with a sentence, nothing created.
    let answer = post_form(
        &http,
        &keys,
        &cookie,
        &[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("name", "None"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 400);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("Invalid scopes: choose at least one scope."),
        "{body}"
    );

    // Signed out with the token: the cookie is cleared and the session is gone.
    let answer = post_form(
        &http,
        format!("{}/console/logout", server.base),
        &cookie,
        &[("csrf", csrf.as_str())],
    )
    .await;
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
        let answer = post_form(
            &http,
            format!("{}/console/keys/{id}/delete", server.base),
            &cookie,
            &[("csrf", csrf.as_str()), ("org", org_b.as_str())],
        )
        .await;
        assert_eq!(answer.status(), 404);
        // Asking for B's key under A's organization is "no such key" too.
        let answer = post_form(
            &http,
            format!("{}/console/keys/{id}/delete", server.base),
            &cookie,
            &[("csrf", csrf.as_str()), ("org", org_a.as_str())],
        )
        .await;
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
    let answer = post_form(
        &http,
        format!("{}/console/keys", server.base),
        &member,
        &[
            ("csrf", csrf.as_str()),
            ("org", org_a.as_str()),
            ("name", "Nope"),
            ("scope", "IMAGE_GENERATION"),
        ],
    )
    .await;
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
    let answer = post_form(
        &http,
        format!("{}/console/members", server.base),
        &owner,
        &[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("email", "new@example.com"),
            ("role", "member"),
        ],
    )
    .await;
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
    let answer = post_form(
        &http,
        format!("{}/console/members", server.base),
        &owner,
        &[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("email", "new@example.com"),
            ("role", "member"),
        ],
    )
    .await;
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
    let answer = post_form(
        &http,
        format!("{}/console/members/{founder_id}/remove", server.base),
        &owner,
        &[("csrf", csrf.as_str()), ("org", org.as_str())],
    )
    .await;
    assert_eq!(answer.status(), 303);
    let answer = post_form(
        &http,
        format!("{}/console/members/{owner_id}/role", server.base),
        &owner,
        &[
            ("csrf", csrf.as_str()),
            ("org", org.as_str()),
            ("role", "member"),
        ],
    )
    .await;
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
    let answer = post_form(
        &http,
        format!("{}/console/members/{owner_id}/role", server.base),
        &admin,
        &[
            ("csrf", admin_csrf.as_str()),
            ("org", org.as_str()),
            ("role", "member"),
        ],
    )
    .await;
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
    let answer = post_form(
        &http,
        format!("{}/console/members/{new_id}/remove", server.base),
        &admin,
        &[("csrf", admin_csrf.as_str()), ("org", org.as_str())],
    )
    .await;
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let (_, page) = get_page(&http, &format!("{}{location}", server.base), &owner).await;
    assert!(
        !page.contains("new@example.com") && page.contains("Member removed."),
        "{page}"
    );

    // Without the CSRF token nothing changes.
    let answer = post_form(
        &http,
        format!("{}/console/members", server.base),
        &owner,
        &[
            ("org", org.as_str()),
            ("email", "x@example.com"),
            ("role", "owner"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 403);
}
