//! The offline renderer's drawing: a deterministic abstract image from a JSON prompt.
//!
//! **This is an offline renderer, not a model.** It does not understand the prompt; it reads a
//! few fields (palette, lighting, style, composition) to choose colours and shapes, and hashes
//! the whole prompt to place them. It exists so that a newcomer, a test suite and every
//! `wi_test_` key get real, decodable images of the requested size without an account or a
//! network.
//!
//! The design decision that shapes it: **the image is a pure function of (canonical prompt,
//! aspect ratio, size).** The prompt is canonicalized (object keys sorted, recursively) and hashed
//! with SHA-256; the hash seeds a small PRNG that picks every random choice. The same prompt gives
//! the same bytes on every run and every replica, so tests can compare outputs exactly and
//! content-addressed media storage deduplicates repeats for free. Nothing here reads a clock, the
//! environment or the network.

use image::RgbImage;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An RGB colour with float channels in 0..=255.
type Rgb = [f32; 3];

/// Renders `prompt` at `width`×`height` (the caller has checked the size against the limits).
pub fn render(prompt: &Value, width: u32, height: u32) -> RgbImage {
    let seed = seed(prompt);
    let mut rng = SplitMix64::new(u64::from_le_bytes(first8(&seed)));
    let look = Look::from_prompt(prompt, &mut rng);
    let mut img = RgbImage::new(width, height);
    paint_background(&mut img, &look, &mut rng);
    let (w, h) = (width as f32, height as f32);
    let unit = w.min(h);
    let shapes = 5 + (rng.next() % 8) as usize;
    for i in 0..shapes {
        let color = look.palette[2 + i % (look.palette.len() - 2)];
        let shape = Shape {
            kind: look.style.pick(&mut rng),
            cx: rng.unit() * w,
            cy: rng.unit() * h,
            radius: unit * (0.04 + 0.16 * rng.unit()),
            aspect: 0.5 + rng.unit(),
            color,
            alpha: 0.30 + 0.45 * rng.unit(),
            feather: look.style.feather(unit),
        };
        shape.draw(&mut img);
    }
    // The focal shape: where the composition puts the subject, in the subject's colour.
    let (fx, fy) = look.focal;
    let focal = Shape {
        kind: ShapeKind::Circle,
        cx: fx * w,
        cy: fy * h,
        radius: unit * (0.18 + 0.08 * rng.unit()),
        aspect: 1.0,
        color: look.subject,
        alpha: 0.92,
        feather: look.style.feather(unit).max(unit * 0.004),
    };
    focal.draw(&mut img);
    let highlight = Shape {
        kind: ShapeKind::Circle,
        cx: focal.cx - focal.radius * 0.35,
        cy: focal.cy - focal.radius * 0.35,
        radius: focal.radius * 0.35,
        aspect: 1.0,
        color: mix(look.subject, [255.0; 3], 0.6),
        alpha: 0.35 * look.light,
        feather: focal.radius * 0.3,
    };
    highlight.draw(&mut img);
    img
}

/// SHA-256 of the prompt's canonical JSON (keys sorted at every level).
pub fn seed(prompt: &Value) -> [u8; 32] {
    let mut text = String::new();
    canonical(prompt, &mut text);
    Sha256::digest(text.as_bytes()).into()
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(k) {
                    canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn first8(bytes: &[u8; 32]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

/// SplitMix64: tiny, fast, and fully determined by its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ShapeKind {
    Circle,
    Rect,
    Ring,
}

#[derive(Debug, Clone, Copy)]
enum StyleKind {
    /// Soft, blurred blobs (watercolor, painterly, dreamy).
    Soft,
    /// Hard-edged rectangles and circles (flat, minimal, geometric, 3d).
    Geometric,
    /// A mix (photographic and everything else).
    Mixed,
}

impl StyleKind {
    fn from_text(text: &str) -> Self {
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if has(&["watercolor", "painterly", "soft", "dream", "pastel", "oil"]) {
            StyleKind::Soft
        } else if has(&["flat", "minimal", "geometric", "3d", "isometric", "vector"]) {
            StyleKind::Geometric
        } else {
            StyleKind::Mixed
        }
    }

    fn pick(self, rng: &mut SplitMix64) -> ShapeKind {
        let r = rng.next() % 3;
        match (self, r) {
            (StyleKind::Soft, _) => ShapeKind::Circle,
            (StyleKind::Geometric, 0) => ShapeKind::Circle,
            (StyleKind::Geometric, _) => ShapeKind::Rect,
            (StyleKind::Mixed, 0) => ShapeKind::Circle,
            (StyleKind::Mixed, 1) => ShapeKind::Rect,
            (StyleKind::Mixed, _) => ShapeKind::Ring,
        }
    }

    fn feather(self, unit: f32) -> f32 {
        match self {
            StyleKind::Soft => unit * 0.06,
            StyleKind::Geometric => 1.0,
            StyleKind::Mixed => unit * 0.008,
        }
    }
}

/// What the prompt's fields decide.
struct Look {
    /// At least three colours: two for the background, the rest for shapes.
    palette: Vec<Rgb>,
    subject: Rgb,
    style: StyleKind,
    /// Brightness factor from the lighting (0.55 night … 1.15 bright).
    light: f32,
    /// Where the focal shape sits, as fractions of width and height.
    focal: (f32, f32),
}

fn text_of(prompt: &Value, field: &str) -> String {
    match prompt.get(field) {
        Some(Value::String(s)) => s.to_lowercase(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        _ => String::new(),
    }
}

impl Look {
    fn from_prompt(prompt: &Value, rng: &mut SplitMix64) -> Self {
        let lighting = text_of(prompt, "lighting");
        let light_has = |words: &[&str]| words.iter().any(|w| lighting.contains(w));
        let (light, tint): (f32, Rgb) = if light_has(&["night", "dark", "moody", "low-key", "noir"])
        {
            (0.55, [0.85, 0.9, 1.15])
        } else if light_has(&["golden", "sunset", "warm", "candle", "sunrise"]) {
            (1.0, [1.15, 1.0, 0.8])
        } else if light_has(&["bright", "studio", "daylight", "high-key", "sunny"]) {
            (1.15, [1.0, 1.0, 1.0])
        } else {
            (1.0, [1.0, 1.0, 1.0])
        };
        let mut palette: Vec<Rgb> = palette_colors(&text_of(prompt, "palette"));
        // Fill up to five colours from the hash: evenly spread hues around a seeded base.
        let base_hue = rng.unit() * 360.0;
        let mut k = 0.0;
        while palette.len() < 5 {
            let hue = (base_hue + k * 72.0 + rng.unit() * 20.0) % 360.0;
            palette.push(hsl(hue, 0.55 + 0.3 * rng.unit(), 0.35 + 0.3 * rng.unit()));
            k += 1.0;
        }
        for c in &mut palette {
            for (ch, t) in c.iter_mut().zip(tint) {
                *ch = (*ch * light * t).clamp(0.0, 255.0);
            }
        }
        let subject = palette[2 + (rng.next() % (palette.len() as u64 - 2)) as usize];
        let composition = text_of(prompt, "composition");
        let focal = if composition.contains("center") || composition.contains("centre") {
            (0.5, 0.5)
        } else if composition.contains("third") {
            let x = if rng.unit() < 0.5 {
                1.0 / 3.0
            } else {
                2.0 / 3.0
            };
            (x, 2.0 / 3.0)
        } else {
            (0.3 + 0.4 * rng.unit(), 0.3 + 0.4 * rng.unit())
        };
        Look {
            palette,
            subject,
            style: StyleKind::from_text(&text_of(prompt, "style")),
            light,
            focal,
        }
    }
}

/// Colours named in a palette text: `#rrggbb` codes and common colour words, in order.
fn palette_colors(text: &str) -> Vec<Rgb> {
    const NAMED: &[(&str, [u8; 3])] = &[
        ("black", [20, 20, 24]),
        ("white", [245, 245, 240]),
        ("gray", [128, 128, 128]),
        ("grey", [128, 128, 128]),
        ("red", [200, 40, 40]),
        ("crimson", [170, 20, 50]),
        ("orange", [240, 140, 30]),
        ("amber", [255, 191, 0]),
        ("yellow", [240, 210, 50]),
        ("gold", [212, 175, 55]),
        ("lime", [150, 210, 60]),
        ("green", [50, 150, 70]),
        ("olive", [120, 130, 50]),
        ("mint", [160, 225, 190]),
        ("teal", [30, 130, 130]),
        ("turquoise", [64, 210, 200]),
        ("cyan", [40, 200, 220]),
        ("blue", [40, 90, 200]),
        ("navy", [20, 30, 90]),
        ("indigo", [75, 0, 130]),
        ("purple", [120, 60, 160]),
        ("violet", [150, 90, 200]),
        ("lavender", [190, 170, 230]),
        ("magenta", [200, 40, 160]),
        ("pink", [240, 150, 180]),
        ("coral", [250, 128, 100]),
        ("peach", [255, 200, 160]),
        ("brown", [120, 75, 40]),
        ("beige", [225, 210, 180]),
        ("cream", [250, 240, 215]),
        ("silver", [192, 192, 200]),
    ];
    let mut out = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '#')) {
        if out.len() >= 8 {
            break;
        }
        if let Some(hex) = word.strip_prefix('#')
            && hex.len() == 6
            && let Ok(v) = u32::from_str_radix(hex, 16)
        {
            out.push([
                ((v >> 16) & 0xff) as f32,
                ((v >> 8) & 0xff) as f32,
                (v & 0xff) as f32,
            ]);
        } else if let Some((_, c)) = NAMED.iter().find(|(name, _)| *name == word) {
            out.push([f32::from(c[0]), f32::from(c[1]), f32::from(c[2])]);
        }
    }
    out
}

fn hsl(h: f32, s: f32, l: f32) -> Rgb {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// A diagonal gradient between the first two palette colours, darkened towards the edges.
fn paint_background(img: &mut RgbImage, look: &Look, rng: &mut SplitMix64) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let angle = rng.unit() * std::f32::consts::TAU;
    let (dx, dy) = (angle.cos(), angle.sin());
    let span = (w * dx.abs() + h * dy.abs()).max(1.0);
    let (a, b) = (look.palette[0], look.palette[1]);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let max_d2 = cx * cx + cy * cy;
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 - cx, y as f32 - cy);
        let t = ((fx * dx + fy * dy) / span + 0.5).clamp(0.0, 1.0);
        let vignette = 1.0 - 0.35 * (fx * fx + fy * fy) / max_d2;
        let c = mix(a, b, t);
        px.0 = [
            (c[0] * vignette) as u8,
            (c[1] * vignette) as u8,
            (c[2] * vignette) as u8,
        ];
    }
}

struct Shape {
    kind: ShapeKind,
    cx: f32,
    cy: f32,
    radius: f32,
    /// Width/height ratio of rectangles.
    aspect: f32,
    color: Rgb,
    alpha: f32,
    /// Width of the soft edge, in pixels.
    feather: f32,
}

impl Shape {
    /// Signed distance from the shape's edge (negative inside).
    fn distance(&self, x: f32, y: f32) -> f32 {
        let (px, py) = (x - self.cx, y - self.cy);
        match self.kind {
            ShapeKind::Circle => (px * px + py * py).sqrt() - self.radius,
            ShapeKind::Ring => {
                ((px * px + py * py).sqrt() - self.radius).abs() - self.radius * 0.15
            }
            ShapeKind::Rect => {
                let (hw, hh) = (self.radius * self.aspect, self.radius / self.aspect);
                let corner = self.radius * 0.12;
                let qx = px.abs() - hw + corner;
                let qy = py.abs() - hh + corner;
                let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
                outside + qx.max(qy).min(0.0) - corner
            }
        }
    }

    fn draw(&self, img: &mut RgbImage) {
        let reach = match self.kind {
            ShapeKind::Rect => self.radius * self.aspect.max(1.0 / self.aspect),
            _ => self.radius * 1.2,
        } + self.feather;
        let (w, h) = (img.width() as f32, img.height() as f32);
        let x0 = (self.cx - reach).floor().clamp(0.0, w) as u32;
        let x1 = (self.cx + reach).ceil().clamp(0.0, w) as u32;
        let y0 = (self.cy - reach).floor().clamp(0.0, h) as u32;
        let y1 = (self.cy + reach).ceil().clamp(0.0, h) as u32;
        let feather = self.feather.max(1.0);
        for y in y0..y1 {
            for x in x0..x1 {
                let d = self.distance(x as f32 + 0.5, y as f32 + 0.5);
                let coverage = (0.5 - d / feather).clamp(0.0, 1.0);
                if coverage <= 0.0 {
                    continue;
                }
                let a = coverage * self.alpha;
                let px = img.get_pixel_mut(x, y);
                for (ch, c) in px.0.iter_mut().zip(self.color) {
                    *ch = (f32::from(*ch) * (1.0 - a) + c * a) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_order_does_not_change_the_seed() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"y":2,"x":[1,"z"]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"x":[1,"z"],"y":2},"a":1}"#).unwrap();
        assert_eq!(seed(&a), seed(&b));
        assert_ne!(seed(&a), seed(&json!({"a": 2})));
    }

    #[test]
    fn palettes_read_hex_and_names() {
        let p = palette_colors("warm coral, #102030 and navy");
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], [16.0, 32.0, 48.0]);
    }

    #[test]
    fn rendering_is_a_pure_function_of_the_prompt() {
        let prompt = json!({"subject": "lemon", "palette": ["yellow", "mint"]});
        let a = render(&prompt, 64, 48);
        let b = render(&prompt, 64, 48);
        assert_eq!(a.as_raw(), b.as_raw());
        let c = render(&json!({"subject": "lime"}), 64, 48);
        assert_ne!(a.as_raw(), c.as_raw());
        assert_eq!((a.width(), a.height()), (64, 48));
    }
}
