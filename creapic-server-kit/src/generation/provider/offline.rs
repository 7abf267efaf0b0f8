//! The offline renderer as an [`ImageProvider`]: **not a model**, a deterministic drawing of
//! the JSON prompt (see `render::offline`), encoded as PNG.
//!
//! The design decision that shapes it: **it never touches the network and needs no
//! configuration**, so it is the embedded default and the provider every `wi_test_` key uses,
//! whatever is configured for live keys. Its size follows the quality (`Quality::long_side`:
//! 1024 px for standard, 2048 px for hd, on the longer side) unless a host asks for smaller
//! images (previews, tests) with [`OfflineRenderer::with_long_sides`].

use async_trait::async_trait;
use creapic_core::generation::{AspectRatio, Quality};

use super::{GeneratedImage, ImageProvider, ImageRequest};
use crate::generation::Error;
use crate::generation::media::MediaType;
use crate::generation::render::{self, DIMENSION_MAX};

/// The offline renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineRenderer {
    long_side_standard: u32,
    long_side_hd: u32,
}

impl Default for OfflineRenderer {
    fn default() -> Self {
        OfflineRenderer {
            long_side_standard: Quality::Standard.long_side(),
            long_side_hd: Quality::Hd.long_side(),
        }
    }
}

impl OfflineRenderer {
    /// The renderer at the documented sizes.
    pub fn new() -> Self {
        OfflineRenderer::default()
    }

    /// A renderer whose longer side is `standard` and `hd` pixels (each clamped to 8..=4096).
    pub fn with_long_sides(standard: u32, hd: u32) -> Self {
        OfflineRenderer {
            long_side_standard: standard.clamp(8, 4096),
            long_side_hd: hd.clamp(8, 4096),
        }
    }

    /// The pixel size it renders for `aspect` and `quality`.
    pub fn size(&self, aspect: AspectRatio, quality: Quality) -> (u32, u32) {
        let long = match quality {
            Quality::Standard => self.long_side_standard,
            Quality::Hd => self.long_side_hd,
        };
        let (w, h) = aspect.size(long);
        (w.min(DIMENSION_MAX), h.min(DIMENSION_MAX))
    }

    /// Renders and encodes synchronously (CPU-bound: call it from a blocking context).
    pub fn render_png(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        let (width, height) = self.size(req.aspect_ratio, req.quality);
        let img = render::offline::render(&req.prompt, width, height);
        let png = render::encode_png(&img)?;
        Ok(GeneratedImage {
            bytes: png.into(),
            media_type: MediaType::Png,
            width,
            height,
        })
    }
}

#[async_trait]
impl ImageProvider for OfflineRenderer {
    fn name(&self) -> &'static str {
        "offline"
    }

    async fn generate(&self, req: &ImageRequest) -> Result<GeneratedImage, Error> {
        let renderer = *self;
        let req = req.clone();
        tokio::task::spawn_blocking(move || renderer.render_png(&req))
            .await
            .map_err(|e| Error::Internal {
                message: format!("offline renderer task: {e}"),
            })?
    }
}
