//! `client.images().get(id)` against a real server on SQLite and on PostgreSQL: two identical
//! generations are two generations with two ids, each read back with the fields it was answered
//! with and a link to the same image; another organization's key gets a typed `NotFound`; a
//! replay under the same `Idempotency-Key` answers with the same id and charges once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BACKENDS, server_on_backend};
use creapic_client::wire::{
    AspectRatioWire, GenerateImageRequest, ImageSource, JobStatusWire, QualityWire,
};
use creapic_client::{Error, ErrorCode};
use creapic_core::scope::Scope;
use reqwest::StatusCode;

fn request() -> GenerateImageRequest {
    GenerateImageRequest {
        source: ImageSource::Text {
            text: "A lighthouse at dusk".into(),
        },
        aspect_ratio: AspectRatioWire::R16x9,
        quality: QualityWire::Standard,
        organization_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_are_read_back_by_id_on_every_backend() {
    for backend in BACKENDS {
        let s = server_on_backend(backend).await;
        s.grant(s.org, 10).await;
        let client = s.client(&s.key(&[Scope::ImageGeneration]).await);

        let first = client.images().generate(request()).await.unwrap();
        let second = client.images().generate(request()).await.unwrap();
        assert_ne!(
            first.generation.id, second.generation.id,
            "{backend:?}: two paid generations, two ids"
        );
        assert_eq!(s.balance().await, 8, "{backend:?}: both were charged");
        for answered in [&first, &second] {
            let read = client.images().get(&answered.generation.id).await.unwrap();
            assert_eq!(
                read.generation, answered.generation,
                "{backend:?}: read back as answered"
            );
            assert_eq!(read.generation.status, JobStatusWire::Completed);
            assert_eq!(read.generation.aspect_ratio, AspectRatioWire::R16x9);
            let url = read
                .image_url
                .as_deref()
                .expect("a completed one has an image");
            let again = client.media().download(url).await.unwrap().bytes;
            let original = client
                .media()
                .download(&answered.image_url)
                .await
                .unwrap()
                .bytes;
            assert_eq!(again, original, "{backend:?}: the same image");
        }

        // Another organization's key: a typed NotFound, as for an id that does not exist.
        let (other, _) = s.other_org().await;
        let outsider = s.client(&s.key_in(other, &[Scope::ImageGeneration]).await);
        for id in [
            first.generation.id.clone(),
            uuid::Uuid::now_v7().to_string(),
        ] {
            match outsider.images().get(&id).await {
                Err(Error::Api(e)) => {
                    assert_eq!(
                        (e.status, &e.code),
                        (StatusCode::NOT_FOUND, &ErrorCode::NotFound)
                    );
                }
                other => panic!("{backend:?}: expected NotFound, got {other:?}"),
            }
        }

        // A replay under the same Idempotency-Key: the same id, charged once.
        let once = client
            .images()
            .generate(request())
            .idempotency_key("generation-replay")
            .send_with_meta()
            .await
            .unwrap();
        let twice = client
            .images()
            .generate(request())
            .idempotency_key("generation-replay")
            .send_with_meta()
            .await
            .unwrap();
        assert!(!once.meta.replayed && twice.meta.replayed, "{backend:?}");
        assert_eq!(
            once.body.generation.id, twice.body.generation.id,
            "{backend:?}"
        );
        assert_eq!(s.balance().await, 7, "{backend:?}: charged once");
        let read = client.images().get(&once.body.generation.id).await.unwrap();
        assert_eq!(read.generation, once.body.generation, "{backend:?}");
    }
}
