//! What a bulk job item's input and output text mean to the kit.
//!
//! Core stores item inputs and outputs as opaque text; this module gives them their meaning.
//! The design decision that shapes it: **an input may be plain prompt text**, exactly as the
//! bulk endpoint receives it (`{"prompts": ["A beautiful sunset…"]}`), so the common case needs
//! no wrapping. A JSON object is read as an [`ImageSpec`] (text or ready-made prompt, aspect
//! ratio, quality) when it has `text` or `prompt` and no key outside that shape, and otherwise as a ready-made JSON prompt
//! with the default aspect ratio and quality. Outputs are a small JSON [`ItemOutput`] that names
//! the stored image and the stored JSON prompt, well under core's output limit.

use creapic_core::generation::{AspectRatio, Quality};
use creapic_core::job::{ITEM_INPUT_MAX_BYTES, ITEM_OUTPUT_MAX_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::generation::Error;
use crate::generation::media::MediaKey;

/// Where an image's prompt comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSource {
    /// Raw text, composed into a JSON prompt first.
    Text(String),
    /// A ready-made JSON prompt (an object), used as is.
    Json(Value),
}

/// One image to generate: the input of a bulk item.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// The prompt.
    pub source: PromptSource,
    /// The aspect ratio.
    pub aspect_ratio: AspectRatio,
    /// The quality.
    pub quality: Quality,
}

/// The keys of an [`ImageSpec`] object; an object with other keys is a JSON prompt.
const SPEC_KEYS: &[&str] = &["text", "prompt", "aspectRatio", "quality"];

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageSpecWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<Value>,
    #[serde(default, with = "wire_aspect")]
    aspect_ratio: AspectRatio,
    #[serde(default, with = "wire_quality")]
    quality: Quality,
}

impl ImageSpec {
    /// Plain text at the default aspect ratio and quality.
    pub fn text(text: impl Into<String>) -> Self {
        ImageSpec {
            source: PromptSource::Text(text.into()),
            aspect_ratio: AspectRatio::default(),
            quality: Quality::default(),
        }
    }

    /// Reads an item input (see the module documentation).
    pub fn parse(input: &str) -> Result<Self, Error> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("input", "the prompt is empty"));
        }
        if !trimmed.starts_with('{') {
            return Ok(ImageSpec::text(trimmed));
        }
        let value = match serde_json::from_str::<Value>(trimmed) {
            Ok(value @ Value::Object(_)) => value,
            // Text that merely starts with a brace.
            _ => return Ok(ImageSpec::text(trimmed)),
        };
        let is_spec = value.as_object().is_some_and(|map| {
            (map.contains_key("text") || map.contains_key("prompt"))
                && map.keys().all(|k| SPEC_KEYS.contains(&k.as_str()))
        });
        if !is_spec {
            return Ok(ImageSpec {
                source: PromptSource::Json(value),
                aspect_ratio: AspectRatio::default(),
                quality: Quality::default(),
            });
        }
        let wire: ImageSpecWire =
            serde_json::from_value(value).map_err(|e| invalid("input", &e.to_string()))?;
        let source = match (wire.text, wire.prompt) {
            (Some(text), None) if !text.trim().is_empty() => PromptSource::Text(text),
            (None, Some(prompt @ Value::Object(_))) => PromptSource::Json(prompt),
            _ => {
                return Err(invalid(
                    "input",
                    "exactly one of `text` (non-empty) or `prompt` (an object)",
                ));
            }
        };
        Ok(ImageSpec {
            source,
            aspect_ratio: wire.aspect_ratio,
            quality: wire.quality,
        })
    }

    /// The item input text for this spec: plain text when the defaults apply, JSON otherwise.
    pub fn to_input(&self) -> Result<String, Error> {
        let defaults =
            self.aspect_ratio == AspectRatio::default() && self.quality == Quality::default();
        let text = match &self.source {
            PromptSource::Text(t) if defaults && !t.trim_start().starts_with('{') => {
                t.trim().to_owned()
            }
            source => {
                let (text, prompt) = match source {
                    PromptSource::Text(t) => (Some(t.clone()), None),
                    PromptSource::Json(p) => (None, Some(p.clone())),
                };
                serde_json::to_string(&ImageSpecWire {
                    text,
                    prompt,
                    aspect_ratio: self.aspect_ratio,
                    quality: self.quality,
                })
                .map_err(|e| invalid("input", &e.to_string()))?
            }
        };
        if text.len() > ITEM_INPUT_MAX_BYTES {
            return Err(Error::Core(creapic_core::Error::LimitExceeded {
                what: "prompt length in bytes",
                max: ITEM_INPUT_MAX_BYTES as u64,
            }));
        }
        Ok(text)
    }
}

fn invalid(path: &str, message: &str) -> Error {
    Error::InvalidJson {
        path: path.into(),
        message: message.into(),
    }
}

/// What a finished item produced: the item output text is this, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemOutput {
    /// The image in the job organization's media.
    pub media: MediaKey,
    /// The JSON prompt that was sent, in the same organization's media.
    pub prompt: MediaKey,
    /// `image/png`, …
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Which provider drew it (`offline` means the offline renderer, not a model).
    pub provider: String,
}

impl ItemOutput {
    /// The output text stored in the job item (at most `ITEM_OUTPUT_MAX_BYTES`).
    pub fn to_output(&self) -> Result<String, Error> {
        let text = serde_json::to_string(self).map_err(|e| Error::Internal {
            message: e.to_string(),
        })?;
        if text.len() > ITEM_OUTPUT_MAX_BYTES {
            return Err(Error::Internal {
                message: "item output exceeds the core limit".into(),
            });
        }
        Ok(text)
    }

    /// Reads an item output.
    pub fn parse(text: &str) -> Result<Self, Error> {
        serde_json::from_str(text).map_err(|e| Error::Internal {
            message: format!("unreadable item output: {e}"),
        })
    }
}

/// Serde for [`AspectRatio`] as its wire text (core's domain types carry no serde).
pub(crate) mod wire_aspect {
    use super::AspectRatio;

    pub(crate) fn serialize<S: serde::Serializer>(
        v: &AspectRatio,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<AspectRatio, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        AspectRatio::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for [`Quality`] as its wire text.
pub(crate) mod wire_quality {
    use super::Quality;

    pub(crate) fn serialize<S: serde::Serializer>(v: &Quality, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Quality, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Quality::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_text_specs_or_prompts() {
        let t = ImageSpec::parse("  A sunset ").unwrap();
        assert_eq!(t, ImageSpec::text("A sunset"));
        assert_eq!(t.to_input().unwrap(), "A sunset");

        let spec = ImageSpec {
            source: PromptSource::Text("A sunset".into()),
            aspect_ratio: AspectRatio::Landscape16x9,
            quality: Quality::Hd,
        };
        let input = spec.to_input().unwrap();
        assert_eq!(ImageSpec::parse(&input).unwrap(), spec);

        let prompt = json!({"subject": "lemon", "style": "watercolor"});
        let p = ImageSpec::parse(&prompt.to_string()).unwrap();
        assert_eq!(p.source, PromptSource::Json(prompt.clone()));
        let round = ImageSpec::parse(&p.to_input().unwrap()).unwrap();
        assert_eq!(round, p);

        assert_eq!(
            ImageSpec::parse("{curly text").unwrap(),
            ImageSpec::text("{curly text")
        );
        assert!(ImageSpec::parse(r#"{"text": "a", "prompt": {}}"#).is_err());
        assert!(ImageSpec::parse(r#"{"text": "a", "aspectRatio": "7:3"}"#).is_err());
        assert!(ImageSpec::parse("   ").is_err());
    }

    #[test]
    fn outputs_round_trip_within_the_limit() {
        let out = ItemOutput {
            media: MediaKey::of(b"img", crate::generation::media::MediaType::Png),
            prompt: MediaKey::of(b"{}", crate::generation::media::MediaType::Json),
            content_type: "image/png".into(),
            width: 1024,
            height: 1024,
            provider: "offline".into(),
        };
        let text = out.to_output().unwrap();
        assert!(text.len() < ITEM_OUTPUT_MAX_BYTES);
        assert_eq!(ItemOutput::parse(&text).unwrap(), out);
    }
}
