//! `client.media()`: downloading generated images through the signed, expiring links that
//! generation answers carry (`imageUrl`, `images[].url`).
//!
//! Design decision: a signed link is its own authorization, so downloads send no API key — the
//! key never travels to a media host or CDN that a link may point to — and a link to another
//! host gets none of the builder's default headers either. Relative links (a server
//! without a public URL configured answers `/api/media/…`) resolve against the base URL.

use reqwest::Method;

use crate::client::{Auth, Call, Client, Raw};
use crate::error::{Error, Result};

/// A downloaded image.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The `Content-Type` (e.g. `image/png`).
    pub content_type: Option<String>,
}

impl std::fmt::Debug for MediaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaFile")
            .field("len", &self.bytes.len())
            .field("content_type", &self.content_type)
            .finish()
    }
}

impl MediaFile {
    /// A file extension for the content type (`png`, `jpg`, `webp`), `bin` otherwise.
    pub fn extension(&self) -> &'static str {
        // The media type's essence, whatever its case and parameters (`image/PNG; q=1`).
        let essence = self
            .content_type
            .as_deref()
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("image/png") => "png",
            Some("image/jpeg" | "image/jpg") => "jpg",
            Some("image/webp") => "webp",
            Some("image/gif") => "gif",
            _ => "bin",
        }
    }
}

/// Media downloads.
#[derive(Debug, Clone, Copy)]
pub struct Media<'a> {
    client: &'a Client,
}

impl<'a> Media<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Media { client }
    }

    /// Downloads the image a signed link points to (at most the builder's
    /// `media_max_bytes`). An expired or altered link is answered `media_link_invalid` (403).
    pub fn download(&self, link: &str) -> Call<'a, MediaFile> {
        let spec = self
            .client
            .base_url()
            .join(link)
            .map_err(|e| Error::InvalidArgument {
                name: "link",
                reason: format!("not a URL: {e}"),
            })
            .and_then(|url| match url.scheme() {
                "http" | "https" => {
                    let mut spec = self.client.spec(Method::GET, url, Auth::None);
                    spec.max_bytes = self.client.media_max_bytes();
                    Ok(spec)
                }
                _ => Err(Error::InvalidArgument {
                    name: "link",
                    reason: "must be an http(s) URL".into(),
                }),
            });
        self.client.call(spec, decode_media)
    }
}

fn decode_media(raw: Raw) -> Result<MediaFile> {
    let content_type = raw
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(MediaFile {
        bytes: raw.body,
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_follows_the_content_type() {
        let of = |t: Option<&str>| {
            MediaFile {
                bytes: Vec::new(),
                content_type: t.map(str::to_owned),
            }
            .extension()
        };
        assert_eq!(of(Some("image/png")), "png");
        assert_eq!(of(Some("image/jpeg")), "jpg");
        assert_eq!(of(Some("IMAGE/WEBP; q=1")), "webp");
        assert_eq!(of(Some("application/octet-stream")), "bin");
        assert_eq!(of(None), "bin");
    }
}
