//! The scene compositor: layers placed, scaled and alpha-blended over a background.
//!
//! Every provider produces only the background of a scene; the layers (a customer's product
//! shots, logos) are composited here, locally. The design decision that shapes it: **geometry is
//! relative to the canvas** (positions and widths are fractions of the background's size), so a
//! scene means the same thing whichever provider drew the background and at whatever resolution
//! it came back.
//!
//! Work is bounded per render, not only per image: the sum over the layers of their decoded
//! pixels and their scaled pixels is at most [`SCENE_PIXELS_MAX`]. Sixteen layers scaled to
//! 8192² each would be a gigapixel of resampling (and 256 MiB of RGBA apiece) for the price of
//! one render. The sum is computed from the layers' headers ([`super::probe`]) and the real
//! canvas before any layer is decoded, so an over-budget scene fails without the work; at
//! submission, when the layers' sizes are not known yet, `SceneSpec::validate` refuses
//! geometry that is over budget whatever the layers are ([`geometry_pixels`]).

use image::{RgbImage, RgbaImage, imageops::FilterType};

use super::{DIMENSION_MAX, decode, encode_png, probe};
use crate::generation::Error;

/// Most layers in one scene.
pub const LAYERS_MAX: usize = 16;

/// Most pixels one render decodes and scales, summed over its layers: each layer's decoded
/// size plus its size once scaled to its placement (sixteen 1024² layers scaled to 1024² use
/// two thirds of it; one layer scaled to 8192² is over it alone). 48 Mi pixels is 192 MiB of
/// RGBA processed in all, one layer at a time.
pub const SCENE_PIXELS_MAX: u64 = 48 * 1024 * 1024;

/// What the budget is called in errors.
const BUDGET: &str = "scene pixels (layers decoded and scaled)";

/// The size `layer` (`width` × `height` pixels) is scaled to on a canvas `canvas_width` wide at
/// `scale`: `scale` of the canvas width, the layer's aspect ratio kept, each side 1..=8192.
pub fn scaled_size(canvas_width: u32, layer: (u32, u32), scale: f32) -> (u32, u32) {
    let target_w = (canvas_width as f32 * scale)
        .round()
        .clamp(1.0, DIMENSION_MAX as f32);
    let ratio = layer.1 as f32 / layer.0.max(1) as f32;
    let target_h = (target_w * ratio).round().clamp(1.0, DIMENSION_MAX as f32);
    (target_w as u32, target_h as u32)
}

/// The pixels a render of `layers` ((width, height) decoded, scale) on a canvas
/// `canvas_width` wide decodes and scales: Σ width × height + Σ scaled width × scaled height.
pub fn layer_pixels(canvas_width: u32, layers: impl IntoIterator<Item = ((u32, u32), f32)>) -> u64 {
    layers
        .into_iter()
        .map(|(size, scale)| {
            let (w, h) = scaled_size(canvas_width, size, scale);
            u64::from(size.0) * u64::from(size.1) + u64::from(w) * u64::from(h)
        })
        .sum()
}

/// What the geometry alone costs, before the layers' sizes are known: each layer counted as
/// if it were square and already at its scaled size (scaled width², no decoding), on a canvas
/// `canvas_width` wide. Every real layer of that width costs more unless it is wider than tall,
/// so a scene over [`SCENE_PIXELS_MAX`] by this measure is refused at submission; the exact sum
/// is checked again at render time.
pub fn geometry_pixels(canvas_width: u32, scales: impl IntoIterator<Item = f32>) -> u64 {
    scales
        .into_iter()
        .map(|scale| {
            let (w, _) = scaled_size(canvas_width, (1, 1), scale);
            u64::from(w) * u64::from(w)
        })
        .sum()
}

/// `LimitExceeded` for a render over the pixel budget (422 `limit_exceeded`).
pub fn over_budget() -> Error {
    Error::Core(creapic_core::Error::LimitExceeded {
        what: BUDGET,
        max: SCENE_PIXELS_MAX,
    })
}

/// One decoded layer and where it goes.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The layer's encoded bytes (PNG, JPEG or WebP; PNG/WebP alpha is honoured).
    pub image: bytes::Bytes,
    /// Left edge, as a fraction of the canvas width (may be negative or past 1: the layer is
    /// clipped).
    pub x: f32,
    /// Top edge, as a fraction of the canvas height.
    pub y: f32,
    /// The layer's width as a fraction of the canvas width; its height keeps its aspect ratio.
    pub scale: f32,
    /// 0 (invisible) to 1 (opaque), multiplied with the layer's own alpha.
    pub opacity: f32,
}

/// The composed scene.
#[derive(Debug, Clone)]
pub struct Composed {
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Composites `layers`, in order, over `background` and encodes the result as PNG.
pub fn composite(background: &[u8], layers: &[Placement]) -> Result<Composed, Error> {
    if layers.len() > LAYERS_MAX {
        return Err(Error::InvalidImage {
            message: format!("a scene has at most {LAYERS_MAX} layers"),
        });
    }
    let mut canvas = decode(background)?.to_rgb8();
    // Headers only: the whole budget is known before any layer is decoded.
    let mut sizes = Vec::with_capacity(layers.len());
    for layer in layers {
        let (_, w, h) = probe(&layer.image)?;
        sizes.push(((w, h), layer.scale));
    }
    if layer_pixels(canvas.width(), sizes) > SCENE_PIXELS_MAX {
        return Err(over_budget());
    }
    for layer in layers {
        let img = decode(&layer.image)?.to_rgba8();
        blend(&mut canvas, &img, layer);
    }
    let (width, height) = (canvas.width(), canvas.height());
    Ok(Composed {
        png: encode_png(&canvas)?,
        width,
        height,
    })
}

/// Scales `layer` to its placement and blends it over `canvas` (source-over).
fn blend(canvas: &mut RgbImage, layer: &RgbaImage, at: &Placement) {
    let (cw, ch) = (canvas.width() as f32, canvas.height() as f32);
    let opacity = at.opacity.clamp(0.0, 1.0);
    if opacity == 0.0 || !at.scale.is_finite() || at.scale <= 0.0 {
        return;
    }
    let (target_w, target_h) =
        scaled_size(canvas.width(), (layer.width(), layer.height()), at.scale);
    let scaled = image::imageops::resize(layer, target_w, target_h, FilterType::Triangle);
    let left = (at.x * cw).round() as i64;
    let top = (at.y * ch).round() as i64;
    for (lx, ly, px) in scaled.enumerate_pixels() {
        let (x, y) = (left + i64::from(lx), top + i64::from(ly));
        if x < 0 || y < 0 || x >= i64::from(canvas.width()) || y >= i64::from(canvas.height()) {
            continue;
        }
        let a = f32::from(px.0[3]) / 255.0 * opacity;
        if a <= 0.0 {
            continue;
        }
        let dst = canvas.get_pixel_mut(x as u32, y as u32);
        for c in 0..3 {
            let blended = f32::from(px.0[c]) * a + f32::from(dst.0[c]) * (1.0 - a);
            dst.0[c] = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb, Rgba};

    fn png_rgba(img: &RgbaImage) -> bytes::Bytes {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgba8,
            )
            .unwrap();
        out.into()
    }

    #[test]
    fn a_layer_changes_exactly_the_pixels_where_it_is_placed() {
        let bg = encode_png(&RgbImage::from_pixel(100, 50, Rgb([0, 0, 255]))).unwrap();
        let red = png_rgba(&RgbaImage::from_pixel(10, 10, Rgba([255, 0, 0, 255])));
        let layer = Placement {
            image: red,
            x: 0.5,
            y: 0.2,
            scale: 0.2, // 20 px wide on a 100 px canvas, 20 px tall (square layer)
            opacity: 1.0,
        };
        let out = composite(&bg, std::slice::from_ref(&layer)).unwrap();
        let img = decode(&out.png).unwrap().to_rgb8();
        assert_eq!((out.width, out.height), (100, 50));
        assert_eq!(img.get_pixel(55, 15).0, [255, 0, 0], "inside the layer");
        assert_eq!(img.get_pixel(10, 10).0, [0, 0, 255], "outside the layer");
        assert_eq!(img.get_pixel(49, 15).0, [0, 0, 255], "just left of it");
        assert_eq!(img.get_pixel(55, 31).0, [0, 0, 255], "just below it");

        // Half opacity blends.
        let half = Placement {
            opacity: 0.5,
            ..layer.clone()
        };
        let img = decode(&composite(&bg, &[half]).unwrap().png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.get_pixel(55, 15).0, [128, 0, 128]);

        // Clipped at the edge without panicking; transparent pixels leave the canvas alone.
        let edge = Placement {
            x: 0.95,
            y: -0.1,
            ..layer
        };
        assert!(composite(&bg, &[edge]).is_ok());
        let clear = Placement {
            image: png_rgba(&RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 0]))),
            x: 0.0,
            y: 0.0,
            scale: 1.0,
            opacity: 1.0,
        };
        let img = decode(&composite(&bg, &[clear]).unwrap().png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.get_pixel(5, 5).0, [0, 0, 255]);
    }

    #[test]
    fn too_many_layers_or_bad_images_are_refused() {
        let bg = encode_png(&RgbImage::new(8, 8)).unwrap();
        let layer = Placement {
            image: bytes::Bytes::from(bg.clone()),
            x: 0.0,
            y: 0.0,
            scale: 1.0,
            opacity: 1.0,
        };
        assert!(composite(&bg, &vec![layer.clone(); LAYERS_MAX + 1]).is_err());
        let junk = Placement {
            image: bytes::Bytes::from_static(b"junk"),
            ..layer
        };
        assert!(composite(&bg, &[junk]).is_err());
        assert!(composite(b"junk", &[]).is_err());
    }

    #[test]
    fn a_render_over_the_pixel_budget_fails_before_decoding_its_layers() {
        // The scene: 16 layers of 1024² upscaled to 8192² on a 2048-px canvas.
        let bg = encode_png(&RgbImage::new(2048, 16)).unwrap();
        let big = png_rgba(&RgbaImage::new(1024, 1024));
        let layer = |scale: f32| Placement {
            image: big.clone(),
            x: 0.0,
            y: 0.0,
            scale,
            opacity: 1.0,
        };
        let started = std::time::Instant::now();
        let refused = composite(&bg, &vec![layer(4.0); LAYERS_MAX]).unwrap_err();
        assert_eq!(refused.code(), "limit_exceeded", "{refused}");
        // Refused from the headers: nothing was decoded or scaled (no tight bound asserted,
        // only that it is not the minutes the work would take).
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        // One layer of 8192² is over the budget on its own; small scales fit.
        assert!(composite(&bg, &[layer(4.0)]).is_err());
        assert!(composite(&bg, &vec![layer(0.05); 4]).is_ok());
        assert_eq!(
            layer_pixels(2048, [((1024, 1024), 4.0)]),
            1024 * 1024 + 8192 * 8192
        );
        assert_eq!(
            layer_pixels(2048, [((1000, 500), 0.5)]),
            500_000 + 1024 * 512
        );
        assert_eq!(geometry_pixels(1024, [1.0, 2.0]), 1024 * 1024 + 2048 * 2048);
    }
}
