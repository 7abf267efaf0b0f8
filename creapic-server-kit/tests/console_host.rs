//! The console behind a host's own login (`DashboardUser`, set by the test's layer from an
//! `x-test-user` header): on several replicas, a form rendered by one is accepted by another that
//! shares the media signing key (the CSRF key of host-signed-in people derives from it) and
//! refused by a server with another key; and the "Add key" form sent twice adds one key and
//! shows it once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use creapic_core::Creapic;
use creapic_core::audit::Actor;
use creapic_core::store::Store;
use creapic_core::store::memory::MemoryStore;
use creapic_server_kit::KitConfig;
use creapic_server_kit::generation::media::{MediaStore, SigningKey};
use creapic_server_kit::generation::pipeline::Pipeline;

async fn replica(core: &Arc<Creapic<dyn Store>>, signing: SigningKey) -> String {
    let pipeline = Pipeline::offline(MediaStore::in_memory(signing));
    let (_, _, base, _server) =
        common::serve_core(core.clone(), KitConfig::default(), pipeline).await;
    base
}

fn field_of(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.find(&marker).expect("the field") + marker.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

/// The first whole key (`wi_live_` + 64 hex) in `text`: a page's prefixes are not one.
fn secret_in(text: &str) -> Option<&str> {
    text.match_indices("wi_live_").find_map(|(at, _)| {
        let key = text.get(at..at + 72)?;
        key[8..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then_some(key)
    })
}

fn csrf_of(page: &str) -> String {
    field_of(page, "csrf")
}

async fn owner_and_org(core: &Arc<Creapic<dyn Store>>) -> (String, String) {
    let (owner, org) = common::seed(core).await;
    (owner.to_string(), org.to_string())
}

#[tokio::test]
async fn a_form_from_one_replica_is_accepted_by_another_with_the_same_signing_key() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let (user, org_id) = owner_and_org(&core).await;
    let shared = SigningKey::generate();
    let one = replica(&core, shared.clone()).await;
    let two = replica(&core, shared).await;
    let stranger = replica(&core, SigningKey::generate()).await;
    let http = reqwest::Client::new();

    let page = http
        .get(format!("{one}/console/keys?org={org_id}"))
        .header("x-test-user", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_of(&page.text().await.unwrap());
    let form = [
        ("csrf", csrf.as_str()),
        ("org", org_id.as_str()),
        ("name", "from replica one"),
        ("scope", "IMAGE_GENERATION"),
    ];

    let answer = http
        .post(format!("{two}/console/keys"))
        .header("x-test-user", &user)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "the other replica accepts the form");
    assert!(secret_in(&answer.text().await.unwrap()).is_some());

    let answer = http
        .post(format!("{stranger}/console/keys"))
        .header("x-test-user", &user)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        403,
        "another signing key, another CSRF key"
    );
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("This form has expired or did not come from this console.")
    );
}

#[tokio::test]
async fn the_add_key_form_sent_twice_adds_one_key_and_shows_it_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let (user, org) = owner_and_org(&core).await;
    let base = replica(&core, SigningKey::generate()).await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{base}/console/keys?org={org}"))
        .header("x-test-user", &user)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (csrf, form_id) = (csrf_of(&page), field_of(&page, "form"));
    assert_eq!(form_id.len(), 32);
    let send = |name: &'static str| {
        let form = [
            ("csrf", csrf.clone()),
            ("org", org.clone()),
            ("form", form_id.clone()),
            ("name", name.to_owned()),
            ("scope", "IMAGE_GENERATION".to_owned()),
        ];
        http.post(format!("{base}/console/keys"))
            .header("x-test-user", &user)
            .form(&form)
            .send()
    };
    let first = send("Production").await.unwrap();
    assert_eq!(first.status(), 201);
    let first = first.text().await.unwrap();
    let secret = secret_in(&first).expect("the new key, shown once");

    // The same form again (a reload of the answer, a second click): no second key, no secret.
    let again = send("Production").await.unwrap();
    assert_eq!(again.status(), 200);
    let text = again.text().await.unwrap();
    assert!(
        !text.contains(secret) && secret_in(&text).is_none(),
        "{text}"
    );
    assert!(
        text.contains("This form was already sent and its key was created then."),
        "{text}"
    );
    // The same form id with other values is refused, not replayed.
    let other = send("Staging").await.unwrap();
    assert_eq!(other.status(), 422);
    assert!(secret_in(&other.text().await.unwrap()).is_none());

    let org_id = creapic_core::id::OrgId::parse(&org).unwrap();
    let keys = core
        .list_keys(
            Actor::Operator,
            org_id,
            &creapic_core::store::KeyQuery {
                include_deleted: false,
                after: None,
                limit: creapic_core::page::PageLimit::new(10).unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(keys.items.len(), 1, "one key for one form");

    // A fresh page has a fresh form id: the next key is added.
    let page = http
        .get(format!("{base}/console/keys?org={org}"))
        .header("x-test-user", &user)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(field_of(&page, "form"), form_id);
}
