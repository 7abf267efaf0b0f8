//! What an image is asked for: [`AspectRatio`] and [`Quality`], and the pixel size they imply;
//! and what became of a synchronous generation: [`GenerationRecord`].
//!
//! Domain types shared by the HTTP layer (which parses them from the wire), the providers (which
//! translate them into each API's terms) and the offline renderer (which draws at the size they
//! give). The accepted aspect ratios are exactly those the public API lists.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{GenerationId, OrgId};
use crate::ledger::Credits;

/// Longest prompt a generation record keeps, in bytes (the composed JSON prompt of a request
/// within the kit's prompt limit is far shorter).
pub const RECORD_PROMPT_MAX_BYTES: usize = 64 * 1024;
/// Longest media object name or error code a generation record keeps, in bytes.
pub const RECORD_NAME_MAX_BYTES: usize = 255;

/// An image's aspect ratio, width:height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AspectRatio {
    /// 1:1 (the default).
    #[default]
    Square,
    /// 2:3
    Portrait2x3,
    /// 3:2
    Landscape3x2,
    /// 3:4
    Portrait3x4,
    /// 4:3
    Landscape4x3,
    /// 4:5
    Portrait4x5,
    /// 5:4
    Landscape5x4,
    /// 9:16
    Portrait9x16,
    /// 16:9
    Landscape16x9,
    /// 21:9
    Ultrawide21x9,
}

impl AspectRatio {
    /// Every accepted ratio.
    pub const ALL: [AspectRatio; 10] = [
        AspectRatio::Square,
        AspectRatio::Portrait2x3,
        AspectRatio::Landscape3x2,
        AspectRatio::Portrait3x4,
        AspectRatio::Landscape4x3,
        AspectRatio::Portrait4x5,
        AspectRatio::Landscape5x4,
        AspectRatio::Portrait9x16,
        AspectRatio::Landscape16x9,
        AspectRatio::Ultrawide21x9,
    ];

    /// The wire text, e.g. `16:9`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AspectRatio::Square => "1:1",
            AspectRatio::Portrait2x3 => "2:3",
            AspectRatio::Landscape3x2 => "3:2",
            AspectRatio::Portrait3x4 => "3:4",
            AspectRatio::Landscape4x3 => "4:3",
            AspectRatio::Portrait4x5 => "4:5",
            AspectRatio::Landscape5x4 => "5:4",
            AspectRatio::Portrait9x16 => "9:16",
            AspectRatio::Landscape16x9 => "16:9",
            AspectRatio::Ultrawide21x9 => "21:9",
        }
    }

    /// Parses the wire text.
    pub fn parse(text: &str) -> Result<Self> {
        AspectRatio::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                Error::invalid(
                    "aspectRatio",
                    "expected one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9",
                )
            })
    }

    /// (width, height) as small integers.
    pub const fn ratio(self) -> (u32, u32) {
        match self {
            AspectRatio::Square => (1, 1),
            AspectRatio::Portrait2x3 => (2, 3),
            AspectRatio::Landscape3x2 => (3, 2),
            AspectRatio::Portrait3x4 => (3, 4),
            AspectRatio::Landscape4x3 => (4, 3),
            AspectRatio::Portrait4x5 => (4, 5),
            AspectRatio::Landscape5x4 => (5, 4),
            AspectRatio::Portrait9x16 => (9, 16),
            AspectRatio::Landscape16x9 => (16, 9),
            AspectRatio::Ultrawide21x9 => (21, 9),
        }
    }

    /// Pixel size whose longer side is `long_side`, rounded to a multiple of 8.
    pub fn size(self, long_side: u32) -> (u32, u32) {
        let (w, h) = self.ratio();
        let round8 = |v: u32| (v.div_ceil(8) * 8).max(8);
        if w >= h {
            (round8(long_side), round8(long_side * h / w))
        } else {
            (round8(long_side * w / h), round8(long_side))
        }
    }
}

impl std::fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rendering quality. `hd` costs more and renders larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    /// The default.
    #[default]
    Standard,
    /// High definition.
    Hd,
}

impl Quality {
    /// `standard` or `hd`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Quality::Standard => "standard",
            Quality::Hd => "hd",
        }
    }

    /// Parses `standard` or `hd`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "standard" => Ok(Quality::Standard),
            "hd" => Ok(Quality::Hd),
            _ => Err(Error::invalid("quality", "expected standard or hd")),
        }
    }

    /// The longer side, in pixels, an image of this quality has.
    pub const fn long_side(self) -> u32 {
        match self {
            Quality::Standard => 1024,
            Quality::Hd => 2048,
        }
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a generation ended. Only finished generations are recorded: a record is written after
/// the capture (completed) or after the confirmed refund (failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationOutcome {
    /// The image was stored and paid for.
    Completed {
        /// The stored image's media object name (its content hash and extension).
        media: String,
        /// Credits captured.
        tokens: Credits,
    },
    /// The generation failed and its hold was released: nothing was charged.
    Failed {
        /// The error's stable code (e.g. `provider_failed`).
        code: String,
    },
}

impl GenerationOutcome {
    /// `completed` or `failed` (the stored text).
    pub const fn status(&self) -> &'static str {
        match self {
            GenerationOutcome::Completed { .. } => "completed",
            GenerationOutcome::Failed { .. } => "failed",
        }
    }

    /// Credits charged: zero for a failed generation.
    pub const fn tokens(&self) -> Credits {
        match self {
            GenerationOutcome::Completed { tokens, .. } => *tokens,
            GenerationOutcome::Failed { .. } => Credits::ZERO,
        }
    }

    /// The stored image's media object name, if it completed.
    pub fn media(&self) -> Option<&str> {
        match self {
            GenerationOutcome::Completed { media, .. } => Some(media),
            GenerationOutcome::Failed { .. } => None,
        }
    }

    /// The failure's error code, if it failed.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            GenerationOutcome::Completed { .. } => None,
            GenerationOutcome::Failed { code } => Some(code),
        }
    }
}

/// What a synchronous generation was asked for, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationParams {
    /// The prompt as JSON text (see [`GenerationRecord::prompt`]).
    pub prompt: String,
    /// The aspect ratio.
    pub aspect_ratio: AspectRatio,
    /// The quality.
    pub quality: Quality,
}

/// One synchronous generation, as recorded: its id is the id of the hold that paid for it
/// ([`GenerationId::of_hold`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRecord {
    /// The generation (= its hold's id).
    pub id: GenerationId,
    /// Its organization.
    pub org: OrgId,
    /// The prompt as JSON text: the composed JSON prompt (or a ready prompt given as a JSON
    /// string) of a completed generation; what was asked, as JSON, for a failed one.
    pub prompt: String,
    /// The aspect ratio asked for.
    pub aspect_ratio: AspectRatio,
    /// The quality asked for.
    pub quality: Quality,
    /// How it ended.
    pub outcome: GenerationOutcome,
    /// When it was recorded.
    pub created_at: Timestamp,
}

impl GenerationRecord {
    /// Checks the bounds of the texts a record keeps.
    pub fn validate(&self) -> Result<()> {
        if self.prompt.is_empty() {
            return Err(Error::invalid("generation prompt", "must not be empty"));
        }
        if self.prompt.len() > RECORD_PROMPT_MAX_BYTES {
            return Err(Error::LimitExceeded {
                what: "generation prompt bytes",
                max: RECORD_PROMPT_MAX_BYTES as u64,
            });
        }
        let name = match &self.outcome {
            GenerationOutcome::Completed { media, .. } => ("generation media", media),
            GenerationOutcome::Failed { code } => ("generation error code", code),
        };
        if name.1.is_empty() || name.1.len() > RECORD_NAME_MAX_BYTES {
            return Err(Error::invalid(name.0, "must be 1 to 255 bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_round_trip_and_size_correctly() {
        for r in AspectRatio::ALL {
            assert_eq!(AspectRatio::parse(r.as_str()).ok(), Some(r));
            let (w, h) = r.size(1024);
            assert!(w.max(h) == 1024 && w % 8 == 0 && h % 8 == 0, "{r}: {w}x{h}");
            let (rw, rh) = r.ratio();
            let err = (f64::from(w) / f64::from(h) - f64::from(rw) / f64::from(rh)).abs();
            assert!(err < 0.02, "{r}: {w}x{h}");
        }
        assert!(AspectRatio::parse("1:2").is_err());
        assert_eq!(Quality::parse("hd").ok(), Some(Quality::Hd));
        assert!(Quality::parse("HD").is_err());
    }
}
