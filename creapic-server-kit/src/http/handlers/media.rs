//! `GET /api/media/{org}/{key}?expires=…&sig=…`: generated images, served only through signed,
//! expiring links. The signature binds the organization and the object, so guessing another
//! organization's URL (or changing the org in a valid one) gets a 403, never an image.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use creapic_core::id::OrgId;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::Error;
use crate::generation::media::MediaKey;
use crate::http::handlers::keys::query;
use crate::http::service::AppState;

/// The signature part of a media link.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkParams {
    /// Expiry, seconds since the Unix epoch.
    pub expires: i64,
    /// The link's signature.
    pub sig: String,
}

/// Serves one stored image.
#[utoipa::path(
    get,
    path = "/api/media/{org}/{key}",
    operation_id = "getMedia",
    tag = "media",
    params(("org" = String, Path, description = "Organization id"), ("key" = String, Path, description = "Object key"), LinkParams),
    responses(
        (status = 200, description = "The image", content_type = "image/png"),
        (status = 400, description = "Malformed link", body = creapic_core::wire::ErrorBody),
        (status = 403, description = "Bad signature or expired link", body = creapic_core::wire::ErrorBody),
        (status = 404, description = "No such object", body = creapic_core::wire::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path((org, key)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let result = async {
        let org = OrgId::parse(&org).map_err(|_| Error::InvalidParameter {
            name: "org",
            message: "must be an organization id".into(),
        })?;
        let key = MediaKey::parse(&key)?;
        let link: LinkParams = query(&parts)?;
        let now = state.core().clock().now();
        state
            .media()
            .verify(org, &key, link.expires, &link.sig, now)?;
        let media = state.media().get(org, &key).await?;
        let left = (link.expires - now.unix_ms().div_euclid(1000)).max(0);
        let mut response = (StatusCode::OK, media.bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.media_type.mime()),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={left}, immutable")) {
            headers.insert(header::CACHE_CONTROL, v);
        }
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", key.as_str())) {
            headers.insert(header::ETAG, v);
        }
        Ok::<_, Error>(response)
    }
    .await;
    result.unwrap_or_else(Error::into_response)
}
