//! The console behind a host's own login on several replicas: a form rendered by one replica
//! is accepted by another that shares the media signing key (the CSRF key of host-signed-in
//! people derives from it), and refused by a server with another key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use creapic_core::Creapic;
use creapic_core::audit::{Actor, RequestContext};
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

fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn a_form_from_one_replica_is_accepted_by_another_with_the_same_signing_key() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core: Arc<Creapic<dyn Store>> = Arc::new(Creapic::new(store));
    let owner = core.ensure_user("owner@example.com").await.unwrap();
    let org = core
        .create_org(
            "Acme",
            owner.id,
            Actor::Operator,
            &RequestContext::default(),
        )
        .await
        .unwrap();
    let shared = SigningKey::generate();
    let one = replica(&core, shared.clone()).await;
    let two = replica(&core, shared).await;
    let stranger = replica(&core, SigningKey::generate()).await;
    let http = reqwest::Client::new();
    let user = owner.id.to_string();

    let page = http
        .get(format!("{one}/console/keys?org={}", org.id))
        .header("x-test-user", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_of(&page.text().await.unwrap());
    let org_id = org.id.to_string();
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
    assert!(answer.text().await.unwrap().contains("wi_live_"));

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
