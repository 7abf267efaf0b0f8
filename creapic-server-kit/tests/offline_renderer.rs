//! The offline renderer: real PNGs of the requested aspect ratio and the size its quality
//! implies, the same bytes for the same prompt, a different image for a different prompt.
// Test helpers outside #[test] functions unwrap too: a failure is the test's answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use creapic_core::generation::{AspectRatio, Quality};
use creapic_server_kit::generation::provider::offline::OfflineRenderer;
use creapic_server_kit::generation::provider::{ImageProvider, ImageRequest};
use serde_json::json;

fn request(prompt: serde_json::Value, aspect: AspectRatio, quality: Quality) -> ImageRequest {
    ImageRequest {
        prompt,
        aspect_ratio: aspect,
        quality,
    }
}

fn decode(bytes: &[u8]) -> image::RgbImage {
    assert_eq!(image::guess_format(bytes).unwrap(), image::ImageFormat::Png);
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

#[tokio::test]
async fn every_aspect_ratio_has_its_size() {
    // Small long sides keep this fast; the sizes follow the same rule as the defaults.
    let renderer = OfflineRenderer::with_long_sides(320, 480);
    for aspect in AspectRatio::ALL {
        for (quality, long) in [(Quality::Standard, 320), (Quality::Hd, 480)] {
            let req = request(json!({"subject": "a kite"}), aspect, quality);
            let image = renderer.generate(&req).await.unwrap();
            let img = decode(&image.bytes);
            assert_eq!(img.dimensions(), (image.width, image.height));
            assert_eq!(img.dimensions(), aspect.size(long), "{aspect} {quality}");
            // The short side is the exact proportion rounded up to a multiple of 8.
            let (rw, rh) = aspect.ratio();
            let (w, h) = (f64::from(img.width()), f64::from(img.height()));
            let exact_short = f64::from(long) * f64::from(rw.min(rh)) / f64::from(rw.max(rh));
            assert!((w.min(h) - exact_short).abs() <= 8.0, "{aspect}: {w}x{h}");
            assert_eq!(w.max(h), f64::from(long));
        }
    }
}

#[tokio::test]
async fn default_sizes_follow_the_quality() {
    let renderer = OfflineRenderer::new();
    assert_eq!(
        renderer.size(AspectRatio::Landscape16x9, Quality::Hd),
        (2048, 1152)
    );
    let req = request(
        json!({"subject": "a lighthouse"}),
        AspectRatio::Portrait4x5,
        Quality::Standard,
    );
    let image = renderer.generate(&req).await.unwrap();
    assert_eq!(decode(&image.bytes).dimensions(), (824, 1024));
    assert_eq!(image.content_type(), "image/png");
}

#[tokio::test]
async fn same_prompt_same_bytes_different_prompt_different_image() {
    let renderer = OfflineRenderer::with_long_sides(256, 512);
    let a = json!({"subject": "citrus mocktails", "palette": ["yellow", "mint"],
                   "lighting": "bright natural sunlight", "style": "editorial photography"});
    // Key order does not matter: the prompt is canonicalized before hashing.
    let a_reordered = json!({"style": "editorial photography", "lighting": "bright natural sunlight",
                             "palette": ["yellow", "mint"], "subject": "citrus mocktails"});
    let b = json!({"subject": "a night city", "palette": ["navy", "magenta"],
                   "lighting": "night, neon accents"});
    let sq = |p| request(p, AspectRatio::Square, Quality::Standard);
    let one = renderer.generate(&sq(a.clone())).await.unwrap();
    let two = renderer.generate(&sq(a_reordered)).await.unwrap();
    let other = renderer.generate(&sq(b)).await.unwrap();
    assert_eq!(one.bytes, two.bytes);
    assert_ne!(one.bytes, other.bytes);
    // Different as images, not only as bytes: many pixels differ, and by a lot.
    let (x, y) = (decode(&one.bytes), decode(&other.bytes));
    let differing = x
        .pixels()
        .zip(y.pixels())
        .filter(|(p, q)| {
            p.0.iter()
                .zip(q.0)
                .map(|(a, b)| u32::from(a.abs_diff(b)))
                .sum::<u32>()
                > 60
        })
        .count();
    assert!(
        differing > (256 * 256) / 2,
        "only {differing} pixels differ"
    );
    // The palette is honoured: a night prompt is darker than a bright one.
    let mean = |img: &image::RgbImage| {
        img.pixels()
            .map(|p| p.0.iter().map(|c| u64::from(*c)).sum::<u64>())
            .sum::<u64>()
            / u64::from(img.width() * img.height())
    };
    assert!(
        mean(&y) < mean(&x),
        "night {} vs day {}",
        mean(&y),
        mean(&x)
    );
}
