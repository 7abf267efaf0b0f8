//! Local image work: the offline renderer's drawing ([`offline`]), the scene compositor
//! ([`composite`]) and the bounded decode/encode both share.
//!
//! The design decision that shapes it: **pixels are only ever touched here, synchronously, with
//! limits checked before any allocation.** Decoding an image someone else produced (a provider's
//! background, a customer's layer) is the classic way to be made to allocate gigabytes, so every
//! decode goes through [`decode`], which reads the header first and refuses anything over
//! [`DIMENSION_MAX`] per side or [`PIXELS_MAX`] in all. Callers run these functions on the
//! blocking pool (`tokio::task::spawn_blocking`): they are CPU-bound and must not stall the
//! async workers.

use std::io::Cursor;

use image::{DynamicImage, ImageEncoder, ImageReader, Limits, RgbImage};

use crate::generation::Error;
use crate::generation::media::MediaType;

pub mod composite;
pub mod offline;

/// Longest side of any image decoded or produced, in pixels.
pub const DIMENSION_MAX: u32 = 8192;
/// Most pixels of any image decoded or produced (a 16:9 8K frame is about 33 M).
pub const PIXELS_MAX: u64 = 40_000_000;

fn invalid(message: impl std::fmt::Display) -> Error {
    Error::InvalidImage {
        message: message.to_string(),
    }
}

/// The format and size of an encoded image, read from its header only.
pub fn probe(bytes: &[u8]) -> Result<(MediaType, u32, u32), Error> {
    let kind =
        MediaType::sniff_image(bytes).ok_or_else(|| invalid("not a PNG, JPEG or WebP image"))?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(invalid)?;
    let (w, h) = reader.into_dimensions().map_err(invalid)?;
    check_size(w, h)?;
    Ok((kind, w, h))
}

fn check_size(w: u32, h: u32) -> Result<(), Error> {
    if w == 0 || h == 0 || w > DIMENSION_MAX || h > DIMENSION_MAX {
        return Err(invalid(format!(
            "{w}x{h} is outside 1..={DIMENSION_MAX} pixels per side"
        )));
    }
    if u64::from(w) * u64::from(h) > PIXELS_MAX {
        return Err(invalid(format!("{w}x{h} exceeds {PIXELS_MAX} pixels")));
    }
    Ok(())
}

/// Decodes a PNG, JPEG or WebP image, refusing oversized ones before allocating them.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, Error> {
    probe(bytes)?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(invalid)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(DIMENSION_MAX);
    limits.max_image_height = Some(DIMENSION_MAX);
    limits.max_alloc = Some(PIXELS_MAX * 8);
    reader.limits(limits);
    reader.decode().map_err(invalid)
}

/// Encodes an RGB image as PNG with fast compression (the renderer's images are smooth
/// gradients and shapes, which compress well even at the fastest level).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(img.as_raw().len() / 8);
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    );
    encoder
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(invalid)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_what_it_cannot_or_should_not_read() {
        assert!(decode(b"not an image").is_err());
        let png = encode_png(&RgbImage::new(4, 3)).unwrap();
        assert_eq!(probe(&png).unwrap(), (MediaType::Png, 4, 3));
        assert_eq!(decode(&png).unwrap().width(), 4);
        assert!(check_size(DIMENSION_MAX + 1, 1).is_err());
        assert!(check_size(8000, 8000).is_err());
        assert!(check_size(0, 10).is_err());
    }
}
