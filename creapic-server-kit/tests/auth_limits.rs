//! Failed authentications are limited per client address, through the real service on
//! loopback with default settings: a client sending well-formed unknown keys gets 401s, then
//! 429 `too_many_auth_failures` with `Retry-After`, and the store sees a bounded number of
//! lookups; another address (127.0.0.2, also loopback) and the limited client's own valid key
//! are unaffected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use common::{app, body};
use creapic_core::auth::AuthConfig;
use creapic_core::key::{KeyMode, generate_key};
use creapic_core::random::SeededRandom;
use creapic_core::scope::Scope;
use serde_json::json;

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn repeated_bad_keys_from_one_address_get_429_and_others_are_unaffected() {
    let app = app().await;
    app.grant(app.org, 10).await;
    let valid = app.key(&[Scope::ImageGeneration]).await;
    let url = app.url("/api/playground/images");
    let payload = json!({"prompts": ["A lighthouse at dusk"]});
    let attacker = client_from([127, 0, 0, 1]);
    let bystander = client_from([127, 0, 0, 2]);

    // The attacker's own valid key, warm in the cache.
    let warm = attacker.get(app.url("/api/playground/images/00000000-0000-7000-8000-000000000000"));
    let (status, _, _) = body(warm.bearer_auth(&valid).send().await.unwrap()).await;
    assert_eq!(status, 404, "a known key, an unknown job");

    let before = app.core.authenticator().store_lookups();
    let rng = SeededRandom::new(11);
    let (mut unauthorized, mut limited) = (0u32, 0u32);
    for _ in 0..300 {
        let key = generate_key(KeyMode::Live, &rng);
        let resp = attacker
            .post(&url)
            .bearer_auth(key.expose())
            .json(&payload)
            .send()
            .await
            .unwrap();
        let (status, headers, b) = body(resp).await;
        match status {
            401 => {
                assert_eq!(b["code"], "invalid_api_key");
                assert_eq!(limited, 0, "no 401 after the first 429");
                unauthorized += 1;
            }
            429 => {
                assert_eq!(b["code"], "too_many_auth_failures", "{b}");
                let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(wait >= 1, "Retry-After {wait}");
                limited += 1;
            }
            other => panic!("{other}: {b}"),
        }
    }
    let burst = AuthConfig::default().failures_burst;
    assert!(
        unauthorized <= burst && limited == 300 - unauthorized,
        "{unauthorized} × 401, {limited} × 429"
    );
    let lookups = app.core.authenticator().store_lookups() - before;
    assert!(
        lookups <= u64::from(burst),
        "{lookups} store lookups for 300 bad keys"
    );
    // The same bad key again and again: limited too.
    let (status, _, b) = body(
        attacker
            .post(&url)
            .bearer_auth(generate_key(KeyMode::Live, &SeededRandom::new(11)).expose())
            .json(&payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, b["code"].as_str()),
        (429, Some("too_many_auth_failures"))
    );

    // The attacker's warm key still works.
    let resp = attacker
        .post(&url)
        .bearer_auth(&valid)
        .json(&payload)
        .send()
        .await
        .unwrap();
    let (status, _, b) = body(resp).await;
    assert_eq!(status, 202, "{b}");

    // Another address: a bad key is a plain 401, a new valid key works.
    let bad = generate_key(KeyMode::Live, &SeededRandom::new(12));
    let (status, _, b) = body(
        bystander
            .post(&url)
            .bearer_auth(bad.expose())
            .json(&payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, b["code"].as_str()), (401, Some("invalid_api_key")));
    let fresh = app.key(&[Scope::ImageGeneration]).await;
    let (status, _, b) = body(
        bystander
            .post(&url)
            .bearer_auth(&fresh)
            .json(&payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{b}");
}
