//! [`SceneSpec`]: what a scene job's single item input holds, as JSON text.
//!
//! The HTTP handler converts the public scene request into this form. A layer names either an
//! image the organization already has (a generation) or an inline image the request uploaded:
//! those are staged under the request's [`UploadId`] only after the render's credits are
//! reserved, and deleted once the render is done, so the item input stays small (core limits it
//! to 64 KiB), a runner on any replica can fetch the layers, and a refused render leaves nothing
//! in storage. The design decision that shapes it: **layers are referenced by [`MediaKey`] and
//! read back with the job's organization**, so a scene can only ever composite media of the
//! organization that pays for it.

use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::job::ITEM_INPUT_MAX_BYTES;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::generation::Error;
use crate::generation::item::{wire_aspect, wire_quality};
use crate::generation::media::{MediaKey, MediaType, UploadId};
use crate::generation::render::composite::LAYERS_MAX;

/// A scene to render: a background drawn by the provider, layers composited locally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SceneSpec {
    /// The background's prompt: raw text (composed first) or a ready-made JSON prompt object.
    pub background: Value,
    /// Layers, bottom first (at most 16).
    #[serde(default)]
    pub layers: Vec<Layer>,
    /// The aspect ratio of the background.
    #[serde(with = "wire_aspect", default)]
    pub aspect_ratio: AspectRatio,
    /// The quality of the background.
    #[serde(with = "wire_quality", default)]
    pub quality: Quality,
}

/// One layer of a scene. Geometry is relative to the canvas (see `render::composite`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Layer {
    /// The layer's image in the organization's media (PNG, JPEG or WebP).
    pub media: MediaKey,
    /// Set when the image is an upload of the render's request (staged under this id and
    /// deleted after the render) rather than media the organization holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadId>,
    /// Left edge as a fraction of the canvas width, in -1..=2.
    pub x: f32,
    /// Top edge as a fraction of the canvas height, in -1..=2.
    pub y: f32,
    /// Width as a fraction of the canvas width, in (0, 4]; 1 by default.
    #[serde(default = "one")]
    pub scale: f32,
    /// 0..=1; 1 by default.
    #[serde(default = "one")]
    pub opacity: f32,
}

fn one() -> f32 {
    1.0
}

fn invalid(path: String, message: &str) -> Error {
    Error::InvalidJson {
        path,
        message: message.into(),
    }
}

impl SceneSpec {
    /// Checks the limits: a non-empty text or object background, at most 16 layers of image
    /// media, finite geometry within range.
    pub fn validate(&self) -> Result<(), Error> {
        match &self.background {
            Value::String(s) if !s.trim().is_empty() => {}
            Value::Object(_) => {}
            _ => {
                return Err(invalid(
                    "background".into(),
                    "must be prompt text or a JSON prompt object",
                ));
            }
        }
        if self.layers.len() > LAYERS_MAX {
            return Err(invalid(
                "layers".into(),
                &format!("at most {LAYERS_MAX} layers"),
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let at = |f: &str| format!("layers[{i}].{f}");
            if l.media.media_type() == MediaType::Json {
                return Err(invalid(at("media"), "must be an image"));
            }
            for (name, v) in [("x", l.x), ("y", l.y)] {
                if !v.is_finite() || !(-1.0..=2.0).contains(&v) {
                    return Err(invalid(at(name), "must be between -1 and 2"));
                }
            }
            if !l.scale.is_finite() || l.scale <= 0.0 || l.scale > 4.0 {
                return Err(invalid(at("scale"), "must be above 0 and at most 4"));
            }
            if !l.opacity.is_finite() || !(0.0..=1.0).contains(&l.opacity) {
                return Err(invalid(at("opacity"), "must be between 0 and 1"));
            }
        }
        self.check_pixel_budget()
    }

    /// Refuses (422 `limit_exceeded`) a scene whose geometry alone is over the render's pixel
    /// budget on the canvas its aspect ratio and quality ask for
    /// ([`crate::generation::render::composite::geometry_pixels`]): the layers' sizes are not known
    /// here, so each counts as square at its scaled width; the exact sum, with the real canvas and
    /// the layers' real sizes, is checked again when the scene is rendered.
    pub fn check_pixel_budget(&self) -> Result<(), Error> {
        let (canvas_width, _) = self.aspect_ratio.size(self.quality.long_side());
        let pixels = crate::generation::render::composite::geometry_pixels(
            canvas_width,
            self.layers.iter().map(|l| l.scale),
        );
        if pixels > crate::generation::render::composite::SCENE_PIXELS_MAX {
            return Err(crate::generation::render::composite::over_budget());
        }
        Ok(())
    }

    /// Reads and validates a scene item input.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let spec: SceneSpec =
            serde_json::from_str(input).map_err(|e| invalid("scene".into(), &e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The item input text (validated, at most core's input limit).
    pub fn to_input(&self) -> Result<String, Error> {
        self.validate()?;
        let text = serde_json::to_string(self).map_err(|e| Error::Internal {
            message: e.to_string(),
        })?;
        if text.len() > ITEM_INPUT_MAX_BYTES {
            return Err(Error::Core(creapic_core::Error::LimitExceeded {
                what: "scene description length in bytes",
                max: ITEM_INPUT_MAX_BYTES as u64,
            }));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer() -> Layer {
        Layer {
            media: MediaKey::of(b"png", MediaType::Png),
            upload: None,
            x: 0.1,
            y: 0.2,
            scale: 0.5,
            opacity: 1.0,
        }
    }

    #[test]
    fn scenes_round_trip_and_are_validated() {
        let spec = SceneSpec {
            background: json!("a marble countertop"),
            layers: vec![layer()],
            aspect_ratio: AspectRatio::Landscape3x2,
            quality: Quality::Hd,
        };
        let input = spec.to_input().unwrap();
        assert!(input.contains(r#""aspectRatio":"3:2""#));
        assert_eq!(SceneSpec::parse(&input).unwrap(), spec);

        let defaults = SceneSpec::parse(&format!(
            r#"{{"background": {{"subject": "x"}}, "layers": [{{"media": "{}", "x": 0, "y": 0}}]}}"#,
            layer().media
        ))
        .unwrap();
        assert_eq!(defaults.layers[0].scale, 1.0);
        assert_eq!(defaults.aspect_ratio, AspectRatio::Square);

        let bad = |f: &dyn Fn(&mut SceneSpec)| {
            let mut s = spec.clone();
            f(&mut s);
            s.to_input().is_err()
        };
        assert!(bad(&|s| s.background = json!("")));
        assert!(bad(&|s| s.background = json!(3)));
        assert!(bad(&|s| s.layers = vec![layer(); LAYERS_MAX + 1]));
        assert!(bad(&|s| s.layers[0].x = f32::NAN));
        assert!(bad(&|s| s.layers[0].scale = 0.0));
        assert!(bad(&|s| s.layers[0].opacity = 1.5));
        assert!(bad(
            &|s| s.layers[0].media = MediaKey::of(b"", MediaType::Json)
        ));
        assert!(SceneSpec::parse(r#"{"background": "x", "extra": 1}"#).is_err());
    }

    #[test]
    fn geometry_over_the_pixel_budget_is_refused_at_submission() {
        let scene = |n: usize, scale: f32, quality: Quality| SceneSpec {
            background: json!("a studio backdrop"),
            layers: vec![Layer { scale, ..layer() }; n],
            aspect_ratio: AspectRatio::Square,
            quality,
        };
        // The issue's scene: 16 layers upscaled 4× on an hd canvas (8192² each).
        let refused = scene(16, 4.0, Quality::Hd).validate().unwrap_err();
        assert_eq!(refused.code(), "limit_exceeded");
        assert!(
            scene(1, 4.0, Quality::Hd).validate().is_err(),
            "8192² alone"
        );
        assert!(scene(16, 0.8, Quality::Hd).validate().is_ok());
        assert!(scene(16, 1.7, Quality::Standard).validate().is_ok());
        assert!(scene(16, 2.5, Quality::Standard).validate().is_err());
        assert!(
            SceneSpec::parse(&scene(16, 4.0, Quality::Hd).to_input().unwrap_or_default()).is_err()
        );
    }
}
