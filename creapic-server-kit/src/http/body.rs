//! Reading JSON request bodies: bounded size, declared content type, and errors that name the
//! failing path (`source.type`) instead of a generic "bad request".

use axum::body::{Body, Bytes};
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use crate::http::error::Error;

/// Reads at most `max` bytes of `body`; more is [`Error::BodyTooLarge`].
pub async fn read_bytes(body: Body, max: usize) -> Result<Bytes, Error> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(Error::BodyTooLarge { max })
            } else {
                Err(Error::InvalidJson {
                    path: ".".into(),
                    message: "the request body could not be read".into(),
                })
            }
        }
    }
}

/// Checks the content type (JSON or absent), reads and parses the body. Returns the value and
/// the raw bytes (for the idempotency fingerprint).
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<(T, Bytes), Error> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ok = ct
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false);
        if !ok {
            return Err(Error::UnsupportedMediaType);
        }
    }
    let bytes = read_bytes(body, max).await?;
    let value = parse(&bytes)?;
    Ok((value, bytes))
}

/// Parses JSON, naming the failing path on error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidJson {
            path: ".".into(),
            message: "the request body is empty".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.inner().to_string();
        // serde_json appends " at line L column C"; keep it, but bound the length.
        message.truncate(300);
        Error::InvalidJson { path, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use creapic_core::wire::GenerateImageRequest;

    #[test]
    fn errors_name_the_failing_path() {
        let e = parse::<GenerateImageRequest>(br#"{"source":{"type":"video","text":"x"}}"#)
            .err()
            .map(|e| match e {
                Error::InvalidJson { path, .. } => path,
                _ => String::new(),
            });
        // The unknown tag is reported at `source` or `source.type`, depending on how the
        // internally tagged enum buffers it: either names the failing field.
        let path = e.unwrap_or_default();
        assert!(path.starts_with("source"), "{path}");
        let e = parse::<GenerateImageRequest>(
            br#"{"source":{"type":"text","text":"x"},"quality":"ultra"}"#,
        );
        assert!(
            matches!(e, Err(Error::InvalidJson { ref path, .. }) if path == "quality"),
            "{e:?}"
        );
        assert!(matches!(
            parse::<GenerateImageRequest>(b"  "),
            Err(Error::InvalidJson { .. })
        ));
        assert!(matches!(
            parse::<GenerateImageRequest>(b"{"),
            Err(Error::InvalidJson { .. })
        ));
    }
}
