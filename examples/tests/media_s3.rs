//! `creapic serve --media s3://…` against a real S3-compatible server on loopback (moto, which
//! `.ci/run` installs from PyPI and starts on 127.0.0.1:9000; `S3_ENDPOINT` points elsewhere):
//! a generated image is written to the bucket under the organization's prefix, served back
//! through its signed link byte for byte, and a tampered link gets nothing. No server at the
//! endpoint fails the test: it is never a silent skip.

#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use creapic_core::id::OrgId;
use creapic_server_kit::generation::media::{MediaKey, MediaStore, SigningKey};
use serde_json::Value;
use support::{BIN, cli_json, spawn_serve};

mod support;

fn endpoint() -> String {
    std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_images_live_in_the_bucket_and_come_back_through_signed_links() {
    let http = reqwest::Client::new();
    let s3 = endpoint();
    let bucket = format!("creapic-e2e-{}", uuid::Uuid::now_v7().simple());
    // moto accepts unsigned requests: create the bucket the way an operator would have.
    let created = http
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!("no S3-compatible server at {s3} ({e}); `bash .ci/run` starts one (moto)")
        });
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );

    let dir = std::env::temp_dir().join(format!("creapic-s3-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let org =
        cli_json(&dir, &["org", "create", "--name", "S3 Org", "--json"])["organization"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    cli_json(
        &dir,
        &[
            "credits", "grant", "--org", &org, "--amount", "10", "--json",
        ],
    );
    let key = cli_json(
        &dir,
        &[
            "key",
            "create",
            "--org",
            &org,
            "--name",
            "s3",
            "--scopes",
            "IMAGE_GENERATION",
            "--json",
        ],
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--media"])
        .arg(format!("s3://{bucket}/media"))
        .env_remove("CREAPIC_DATABASE_URL")
        .env("AWS_ENDPOINT", &s3)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "creapic-test")
        .env("AWS_SECRET_ACCESS_KEY", "creapic-test")
        .env("RUST_LOG", "warn");
    let server = spawn_serve(command);
    let base = server.base.clone();

    let resp = http
        .post(format!("{base}/api/public/images/generate"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"source": {"type": "text", "text": "a lighthouse at dusk"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let generated: Value = resp.json().await.unwrap();
    let link = generated["imageUrl"].as_str().unwrap().to_owned();

    // The bucket holds the image and its prompt, under the organization's prefix.
    let listing = http
        .get(format!(
            "{s3}/{bucket}?list-type=2&prefix=media/orgs/{org}/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next())
        .collect();
    assert_eq!(keys.len(), 2, "an image and its prompt: {listing}");
    let image_key = keys
        .iter()
        .find(|k| k.ends_with(".png"))
        .unwrap_or_else(|| panic!("a PNG object: {keys:?}"));
    // Read back through object_store with signed requests (moto refuses anonymous reads).
    let options = [
        ("aws_endpoint", s3.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "creapic-test"),
        ("aws_secret_access_key", "creapic-test"),
    ];
    let reader = MediaStore::from_url(
        &format!("s3://{bucket}/media"),
        options,
        SigningKey::generate(),
    )
    .unwrap();
    let file = image_key.rsplit('/').next().unwrap();
    let stored = reader
        .get(OrgId::parse(&org).unwrap(), &MediaKey::parse(file).unwrap())
        .await
        .unwrap()
        .bytes;

    // Served back through the signed link: the very bytes of the bucket.
    let served = http.get(&link).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/png");
    let served = served.bytes().await.unwrap();
    assert!(served.starts_with(b"\x89PNG"));
    assert_eq!(served, stored, "the link serves the object stored in S3");

    // A link with its signature altered serves nothing.
    let tampered = {
        let (head, last) = link.split_at(link.len() - 1);
        format!("{head}{}", if last == "0" { "1" } else { "0" })
    };
    let refused = http.get(&tampered).send().await.unwrap();
    assert!(
        refused.status().is_client_error(),
        "tampered link: {}",
        refused.status()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
