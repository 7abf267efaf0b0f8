//! The scene compositor: layers placed, scaled and alpha-blended over a background.
//!
//! Every provider produces only the background of a scene; the layers (a customer's product
//! shots, logos) are composited here, locally. The design decision that shapes it: **geometry is
//! relative to the canvas** (positions and widths are fractions of the background's size), so a
//! scene means the same thing whichever provider drew the background and at whatever resolution
//! it came back.

use image::{RgbImage, RgbaImage, imageops::FilterType};

use super::{DIMENSION_MAX, decode, encode_png};
use crate::error::Error;

/// Most layers in one scene.
pub const LAYERS_MAX: usize = 16;

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
    let target_w = (cw * at.scale).round().clamp(1.0, DIMENSION_MAX as f32);
    let ratio = layer.height() as f32 / layer.width().max(1) as f32;
    let target_h = (target_w * ratio).round().clamp(1.0, DIMENSION_MAX as f32);
    let scaled = image::imageops::resize(
        layer,
        target_w as u32,
        target_h as u32,
        FilterType::Triangle,
    );
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
}
