//! Prompt composition: raw text → a JSON prompt (subject, setting, style, lighting, composition,
//! palette, aspect ratio, quality, negative) before any provider is called, as the public API
//! document describes. The JSON prompt is what the provider receives and what
//! `generation.prompt` returns.
//!
//! Two composers implement [`PromptComposer`]:
//! - [`RuleComposer`]: deterministic keyword rules, no network. The offline default.
//! - `GeminiComposer` (feature `gemini`): a Gemini text model constrained by a JSON response
//!   schema; any field it leaves empty is filled by the rules.
//!
//! The design decision that shapes it: **the request's aspect ratio and quality always win.**
//! Composers (a model especially) may suggest anything for those two fields; they are overwritten
//! with the typed values the caller paid for, so the prompt never disagrees with the job.

use async_trait::async_trait;
use creapic_core::generation::{AspectRatio, Quality};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::generation::Error;

/// Longest raw text a composer reads, in bytes (longer text is cut at a character boundary).
pub const TEXT_MAX_BYTES: usize = 4000;
/// Longest value of one text field of a composed prompt, in bytes.
pub const FIELD_MAX_BYTES: usize = 1000;
/// Most palette entries.
pub const PALETTE_MAX: usize = 8;
/// Largest ready-made JSON prompt accepted, in bytes (serialized).
pub const JSON_PROMPT_MAX_BYTES: usize = 12 * 1024;

/// A composed prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct JsonPrompt {
    /// What the image shows.
    pub subject: String,
    /// Where.
    pub setting: String,
    /// Visual style (photography, watercolor, 3D render, …).
    pub style: String,
    /// Light.
    pub lighting: String,
    /// Framing.
    pub composition: String,
    /// Colours.
    pub palette: Vec<String>,
    /// `1:1`, `16:9`, … (always the request's).
    pub aspect_ratio: String,
    /// `standard` or `hd` (always the request's).
    pub quality: String,
    /// What must not appear.
    pub negative: String,
}

impl JsonPrompt {
    /// As a JSON object.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Cuts every field to its limit and sets the aspect ratio and quality.
    fn finish(mut self, aspect: AspectRatio, quality: Quality) -> Self {
        for field in [
            &mut self.subject,
            &mut self.setting,
            &mut self.style,
            &mut self.lighting,
            &mut self.composition,
            &mut self.negative,
        ] {
            *field = cut(field.trim(), FIELD_MAX_BYTES).to_owned();
        }
        self.palette.truncate(PALETTE_MAX);
        for colour in &mut self.palette {
            *colour = cut(colour.trim(), 64).to_owned();
        }
        self.palette.retain(|c| !c.is_empty());
        self.aspect_ratio = aspect.as_str().to_owned();
        self.quality = quality.as_str().to_owned();
        self
    }

    /// Fills empty fields from `other`.
    #[cfg_attr(not(feature = "gemini"), allow(dead_code))]
    fn or(mut self, other: JsonPrompt) -> Self {
        let fill = |mine: &mut String, theirs: String| {
            if mine.trim().is_empty() {
                *mine = theirs;
            }
        };
        fill(&mut self.subject, other.subject);
        fill(&mut self.setting, other.setting);
        fill(&mut self.style, other.style);
        fill(&mut self.lighting, other.lighting);
        fill(&mut self.composition, other.composition);
        fill(&mut self.negative, other.negative);
        if self.palette.is_empty() {
            self.palette = other.palette;
        }
        self
    }
}

/// A ready-made prompt from a caller, up to [`JSON_PROMPT_MAX_BYTES`]: a JSON object, with
/// `aspectRatio` and `quality` set to the request's, or a non-empty string, kept as is (the
/// provider receives it verbatim; aspect ratio and quality travel beside it).
pub fn normalize(prompt: Value, aspect: AspectRatio, quality: Quality) -> Result<Value, Error> {
    let mut map = match prompt {
        Value::Object(map) => map,
        Value::String(text) if !text.trim().is_empty() => {
            if text.len() > JSON_PROMPT_MAX_BYTES {
                return Err(Error::InvalidJson {
                    path: "prompt".into(),
                    message: format!("a prompt may have at most {JSON_PROMPT_MAX_BYTES} bytes"),
                });
            }
            return Ok(Value::String(text));
        }
        _ => {
            return Err(Error::InvalidJson {
                path: "prompt".into(),
                message: "a prompt must be a non-empty string or a JSON object".into(),
            });
        }
    };
    map.insert("aspectRatio".into(), Value::String(aspect.as_str().into()));
    map.insert("quality".into(), Value::String(quality.as_str().into()));
    let value = Value::Object(map);
    let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
    if size > JSON_PROMPT_MAX_BYTES {
        return Err(Error::InvalidJson {
            path: "prompt".into(),
            message: format!("a JSON prompt may have at most {JSON_PROMPT_MAX_BYTES} bytes"),
        });
    }
    Ok(value)
}

fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Turns raw text into a [`JsonPrompt`].
#[async_trait]
pub trait PromptComposer: Send + Sync + std::fmt::Debug + 'static {
    /// A short stable name (`rules`, `gemini`).
    fn name(&self) -> &'static str;

    /// Composes a prompt for `text` at `aspect` and `quality`.
    async fn compose(
        &self,
        text: &str,
        aspect: AspectRatio,
        quality: Quality,
    ) -> Result<JsonPrompt, Error>;
}

/// Deterministic keyword rules: the same text always gives the same prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleComposer;

/// (keywords, value): the first entry with a keyword in the text wins.
type Rules = &'static [(&'static [&'static str], &'static str)];

const STYLES: Rules = &[
    (&["watercolor", "watercolour"], "watercolor illustration"),
    (&["oil painting", "painterly"], "oil painting"),
    (&["isometric"], "isometric 3D render"),
    (&["3d", "render"], "3D render, soft materials"),
    (&["pixel"], "pixel art"),
    (&["anime", "manga"], "anime illustration"),
    (&["sketch", "pencil"], "pencil sketch"),
    (
        &["minimal", "flat", "vector", "icon"],
        "minimal flat vector design",
    ),
    (&["illustration", "cartoon"], "digital illustration"),
    (&["cinematic", "film"], "cinematic photography"),
    (&["vintage", "retro"], "vintage film photography"),
];
const STYLE_DEFAULT: &str = "editorial photography, sharp detail";

const LIGHTING: Rules = &[
    (
        &["golden hour", "sunset", "sunrise", "dusk"],
        "warm golden-hour light",
    ),
    (&["neon", "night", "midnight"], "night, neon accents"),
    (&["studio", "product"], "soft studio lighting"),
    (&["candle", "cozy", "cosy"], "warm candlelight"),
    (&["dark", "moody", "noir"], "moody low-key light"),
    (&["winter", "snow", "frost"], "cool diffuse daylight"),
    (
        &["summer", "sunny", "beach", "tropical"],
        "bright natural sunlight",
    ),
];
const LIGHTING_DEFAULT: &str = "soft natural light";

const PALETTES: &[(&[&str], &[&str])] = &[
    (
        &["citrus", "lemon", "summer", "mocktail"],
        &["yellow", "orange", "mint", "turquoise"],
    ),
    (
        &["autumn", "fall", "harvest"],
        &["orange", "brown", "gold", "crimson"],
    ),
    (
        &["winter", "snow", "christmas"],
        &["white", "silver", "navy"],
    ),
    (
        &["spring", "blossom", "easter"],
        &["pink", "mint", "lavender"],
    ),
    (
        &["night", "neon", "cyberpunk"],
        &["navy", "indigo", "magenta"],
    ),
    (&["ocean", "sea", "beach"], &["navy", "turquoise", "white"]),
    (&["forest", "garden", "plant"], &["green", "olive", "brown"]),
    (
        &["coffee", "chocolate", "bakery"],
        &["brown", "cream", "beige"],
    ),
];
const COLOUR_WORDS: &[&str] = &[
    "black",
    "white",
    "gray",
    "grey",
    "red",
    "crimson",
    "orange",
    "amber",
    "yellow",
    "gold",
    "lime",
    "green",
    "olive",
    "mint",
    "teal",
    "turquoise",
    "cyan",
    "blue",
    "navy",
    "indigo",
    "purple",
    "violet",
    "lavender",
    "magenta",
    "pink",
    "coral",
    "peach",
    "brown",
    "beige",
    "cream",
    "silver",
];
const NEGATIVE: &str = "text, watermark, logo, blurry, distorted anatomy, low quality";

/// Leading phrases that describe the request rather than the picture.
const PREAMBLES: &[&str] = &[
    "article about ",
    "blog post about ",
    "post about ",
    "an image of ",
    "image of ",
    "a picture of ",
    "picture of ",
    "a photo of ",
    "photo of ",
    "an illustration of ",
    "illustration of ",
    "generate ",
    "create ",
];

/// Words that start a setting ("… in a sunny kitchen").
const SETTING_MARKERS: &[&str] = &[
    " in ", " on ", " at ", " over ", " under ", " inside ", " beside ",
];

fn first_rule(text: &str, rules: Rules, default: &str) -> String {
    rules
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| contains_word(text, k)))
        .map_or(default, |(_, v)| v)
        .to_owned()
}

/// Whether `needle` occurs in `text` on word boundaries (`text` is lowercase).
fn contains_word(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

impl RuleComposer {
    /// The rules, synchronously.
    pub fn compose_now(&self, text: &str, aspect: AspectRatio, quality: Quality) -> JsonPrompt {
        let text = cut(text, TEXT_MAX_BYTES);
        let clean: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        // ASCII lowercase keeps byte offsets, so indices found in `lower` are valid in `clean`.
        let lower = clean.to_ascii_lowercase();
        // Subject and setting: drop a preamble, split at the first setting marker.
        let mut start = 0;
        for p in PREAMBLES {
            if lower.starts_with(p) {
                start = p.len();
                break;
            }
        }
        let body = &clean[start..];
        let body_lower = &lower[start..];
        let (subject, setting) = match SETTING_MARKERS
            .iter()
            .filter_map(|m| body_lower.find(m))
            .min()
        {
            Some(i) if i > 0 => (body[..i].trim().to_owned(), body[i + 1..].trim().to_owned()),
            _ => (body.trim().to_owned(), String::new()),
        };
        let setting = if setting.is_empty() {
            "a simple, uncluttered setting that suits the subject".to_owned()
        } else {
            setting
        };
        let mut palette: Vec<String> = COLOUR_WORDS
            .iter()
            .filter(|c| contains_word(&lower, c))
            .map(|c| (*c).to_owned())
            .collect();
        if palette.is_empty() {
            palette = PALETTES
                .iter()
                .find(|(keys, _)| keys.iter().any(|k| contains_word(&lower, k)))
                .map(|(_, colours)| colours.iter().map(|c| (*c).to_owned()).collect())
                .unwrap_or_else(|| vec!["harmonious natural tones".to_owned()]);
        }
        let (w, h) = aspect.ratio();
        let composition = if w == h {
            "centered subject, balanced negative space"
        } else if w < h {
            "vertical framing, subject in the upper two thirds"
        } else {
            "wide framing, subject on a rule-of-thirds line"
        };
        JsonPrompt {
            subject: if subject.is_empty() {
                clean.clone()
            } else {
                subject
            },
            setting,
            style: first_rule(&lower, STYLES, STYLE_DEFAULT),
            lighting: first_rule(&lower, LIGHTING, LIGHTING_DEFAULT),
            composition: composition.to_owned(),
            palette,
            aspect_ratio: String::new(),
            quality: String::new(),
            negative: NEGATIVE.to_owned(),
        }
        .finish(aspect, quality)
    }
}

#[async_trait]
impl PromptComposer for RuleComposer {
    fn name(&self) -> &'static str {
        "rules"
    }

    async fn compose(
        &self,
        text: &str,
        aspect: AspectRatio,
        quality: Quality,
    ) -> Result<JsonPrompt, Error> {
        if text.trim().is_empty() {
            return Err(Error::InvalidJson {
                path: "source.text".into(),
                message: "must not be empty".into(),
            });
        }
        Ok(self.compose_now(text, aspect, quality))
    }
}

#[cfg(feature = "gemini")]
pub use gemini_composer::GeminiComposer;

#[cfg(feature = "gemini")]
mod gemini_composer {
    use serde_json::json;

    use super::*;
    use crate::generation::provider::gemini::{GeminiClient, GeminiConfig, first_text};

    const SYSTEM: &str = "You turn a short request into a JSON prompt for an image model. \
        Describe one image. Keep every field short and concrete. `palette` lists 2 to 5 colour \
        names. `negative` lists what must not appear. Never add text to the image unless asked.";

    /// Composition through a Gemini text model with a JSON response schema. When the model
    /// call fails (unreachable, refused, malformed output), the rule composer's prompt is used
    /// instead and a warning is logged: composition must never be the reason an image fails.
    #[derive(Debug, Clone)]
    pub struct GeminiComposer {
        client: GeminiClient,
    }

    impl GeminiComposer {
        /// A composer using `config.text_model`.
        pub fn new(config: GeminiConfig) -> Result<Self, Error> {
            Ok(GeminiComposer {
                client: GeminiClient::new(config)?,
            })
        }

        fn body(text: &str) -> Value {
            let string = json!({ "type": "STRING" });
            let fields = [
                "subject",
                "setting",
                "style",
                "lighting",
                "composition",
                "palette",
                "negative",
            ];
            json!({
                "systemInstruction": { "parts": [{ "text": SYSTEM }] },
                "contents": [{ "role": "user", "parts": [{ "text": text }] }],
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "temperature": 0.4,
                    "responseSchema": {
                        "type": "OBJECT",
                        "properties": {
                            "subject": string, "setting": string, "style": string,
                            "lighting": string, "composition": string, "negative": string,
                            "palette": { "type": "ARRAY", "items": string },
                        },
                        "required": fields,
                        "propertyOrdering": fields,
                    },
                },
            })
        }

        /// The model's prompt, without fallback.
        pub async fn compose_strict(
            &self,
            text: &str,
            aspect: AspectRatio,
            quality: Quality,
        ) -> Result<JsonPrompt, Error> {
            let text = cut(text, TEXT_MAX_BYTES);
            let model = self.client.config().text_model.clone();
            let response = self
                .client
                .generate_content(&model, &Self::body(text))
                .await?;
            let json = first_text(&response)?;
            let prompt: JsonPrompt =
                serde_json::from_str(&json).map_err(|e| Error::ProviderInvalidResponse {
                    provider: "gemini",
                    message: format!("the composed prompt is not the expected JSON: {e}"),
                })?;
            Ok(prompt
                .or(RuleComposer.compose_now(text, aspect, quality))
                .finish(aspect, quality))
        }
    }

    #[async_trait]
    impl PromptComposer for GeminiComposer {
        fn name(&self) -> &'static str {
            "gemini"
        }

        async fn compose(
            &self,
            text: &str,
            aspect: AspectRatio,
            quality: Quality,
        ) -> Result<JsonPrompt, Error> {
            RuleComposer.compose(text, aspect, quality).await?;
            match self.compose_strict(text, aspect, quality).await {
                Ok(prompt) => Ok(prompt),
                Err(e) => {
                    tracing::warn!(error = %e, "Gemini prompt composition failed; using the rules");
                    Ok(RuleComposer.compose_now(text, aspect, quality))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(text: &str) -> JsonPrompt {
        RuleComposer.compose_now(text, AspectRatio::Portrait4x5, Quality::Hd)
    }

    #[test]
    fn rules_extract_the_fields() {
        let p = compose("Article about citrus mocktails with summer ingredients");
        assert_eq!(p.subject, "citrus mocktails with summer ingredients");
        assert_eq!(p.lighting, "bright natural sunlight");
        assert_eq!(p.palette, ["yellow", "orange", "mint", "turquoise"]);
        assert_eq!((p.aspect_ratio.as_str(), p.quality.as_str()), ("4:5", "hd"));
        assert!(p.composition.starts_with("vertical"));
        assert!(!p.negative.is_empty());

        let p = compose("A red bicycle in a sunny courtyard at golden hour, watercolor");
        assert_eq!(p.subject, "A red bicycle");
        assert!(p.setting.starts_with("in a sunny courtyard"));
        assert_eq!(p.style, "watercolor illustration");
        assert_eq!(p.lighting, "warm golden-hour light");
        assert_eq!(p.palette, ["red"]);
        // Word boundaries: "render" is not found inside "surrender", "red" not in "bored".
        let p = compose("bored cats surrender");
        assert_eq!(compose("İstanbul in spring").subject, "İstanbul");
        assert_eq!(p.style, STYLE_DEFAULT);
        assert_eq!(p.palette, ["harmonious natural tones"]);
    }

    #[test]
    fn rules_are_deterministic_and_bounded() {
        let long = "lemon ".repeat(5000);
        let a = compose(&long);
        assert_eq!(a, compose(&long));
        assert!(a.subject.len() <= FIELD_MAX_BYTES);
    }

    #[test]
    fn ready_made_prompts_are_objects_or_text_and_bounded() {
        let v = normalize(
            serde_json::json!({"subject": "x", "aspectRatio": "1:1"}),
            AspectRatio::Landscape16x9,
            Quality::Standard,
        )
        .unwrap();
        assert_eq!(v["aspectRatio"], "16:9");
        // A string is a prompt sent as written; empty strings and other JSON are refused.
        assert_eq!(
            normalize(serde_json::json!("text"), AspectRatio::Square, Quality::Hd).ok(),
            Some(serde_json::json!("text"))
        );
        for bad in [
            serde_json::json!(" "),
            serde_json::json!(1),
            serde_json::json!([]),
        ] {
            assert!(normalize(bad, AspectRatio::Square, Quality::Hd).is_err());
        }
        let big = serde_json::json!({"subject": "x".repeat(JSON_PROMPT_MAX_BYTES)});
        assert!(normalize(big, AspectRatio::Square, Quality::Hd).is_err());
    }
}
