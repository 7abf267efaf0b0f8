//! CSRF protection of the console's forms: [`CheckedForm`] (or [`CheckedLongForm`] for the
//! playground's prompts), the extractor every state-changing console handler takes, reads the signed-in [`Viewer`], then the bounded
//! url-encoded body, and refuses it (403, a sentence on a page) unless its `csrf` field is the
//! viewer's token.
//!
//! A kit session's token is derived from the session token (`SessionToken::csrf`, compared
//! with `SessionToken::check_csrf` in constant time): only the holder of the HttpOnly cookie can
//! know it, and nothing extra is stored. A person the host signed in has no kit session; their
//! token is an HMAC-SHA256 of their user id under a key derived from the media signing key
//! ([`host_token`], [`HOST_KEY_PURPOSE`]), which every replica of a host already shares so that
//! its links verify anywhere: a form rendered by one replica is accepted by another.
//!
//! A form that must take effect once (adding a key, submitting work) also carries a random
//! **form id** ([`new_form_id`], the `form` field): its handler runs under the idempotency key
//! [`form_key`] derives from it, so the same form sent twice — a reload of the answer, a double
//! click — is recognised and never acts twice ([`crate::http::idempotent::once`]).
//!
//! The sign-in form itself carries no token: there is no session yet, and SameSite=Lax plus the
//! sign-in limits bound what a cross-site sign-in could do.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::Response;
use creapic_core::id::UserId;
use creapic_core::idempotency::RequestFingerprint;
use creapic_core::ledger::IdempotencyKey;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::http::console::Console;
use crate::http::console::page;
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::service::AppState;

/// Largest console form body, in bytes (a key's name and its scopes need a few hundred).
pub const FORM_MAX_BYTES: usize = 8 * 1024;
/// Most fields a console form may have.
pub const FIELDS_MAX: usize = 32;

/// What the key of host-signed-in people's tokens is derived for (from the media signing key).
pub const HOST_KEY_PURPOSE: &str = "console csrf";

/// The CSRF token of a person the host signed in (see the module documentation).
pub fn host_token(console: &Console, user: UserId) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(&console.host_csrf_key) {
        Ok(mac) => mac,
        Err(_) => Hmac::<Sha256>::new(&Default::default()),
    };
    mac.update(b"creapic console csrf v1\0");
    mac.update(user.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `presented` is `viewer`'s CSRF token (constant time).
pub fn is_valid(viewer: &Viewer, presented: &str) -> bool {
    match &viewer.session {
        Some(token) => token.check_csrf(presented),
        None => {
            viewer.csrf.len() == presented.len()
                && bool::from(viewer.csrf.as_bytes().ct_eq(presented.as_bytes()))
        }
    }
}

/// Length of a form id: 128 random bits as hex.
pub const FORM_ID_LEN: usize = 32;

/// A fresh form id for a page's once-only form.
pub fn new_form_id() -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; FORM_ID_LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The form id a once-only form was sent with (its `form` field), when it is one.
pub fn form_id(fields: &Fields) -> Option<&str> {
    fields
        .get("form")
        .filter(|id| id.len() == FORM_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The idempotency key of a once-only form `what` sent by `viewer`, from its form id; `None`
/// when it has none (the form then acts every time).
pub fn form_key(viewer: &Viewer, what: &str, fields: &Fields) -> Option<IdempotencyKey> {
    let id = form_id(fields)?;
    IdempotencyKey::new(&format!("console:{}:{what}:{id}", viewer.user)).ok()
}

/// The fingerprint of a once-only form: its fields but the CSRF token and the form id, so the
/// same form id sent with other values is a conflict, not a replay.
pub fn form_fingerprint(path: &str, fields: &Fields) -> RequestFingerprint {
    let mut body = Vec::new();
    for (k, v) in fields.0.iter().filter(|(k, _)| k != "csrf" && k != "form") {
        for part in [k, v] {
            body.extend_from_slice(&(part.len() as u64).to_be_bytes());
            body.extend_from_slice(part.as_bytes());
        }
    }
    RequestFingerprint::of("POST", path, &body)
}

/// A console form's fields, in order (a checkbox group repeats its name).
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses an `application/x-www-form-urlencoded` body of at most [`FIELDS_MAX`] fields.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let mut fields = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if fields.len() == FIELDS_MAX {
                return Err(Error::InvalidParameter {
                    name: "form",
                    message: format!("has more than {FIELDS_MAX} fields"),
                });
            }
            fields.push((k.into_owned(), v.into_owned()));
        }
        Ok(Fields(fields))
    }
}

/// A signed-in person's form whose CSRF token checked out. Rejects with the sign-in redirect
/// (nobody signed in), 415 (not a form), 413 (over [`FORM_MAX_BYTES`]), 400 (too many fields)
/// or 403 (`invalid_csrf_token`), each a page with a sentence.
#[derive(Debug)]
pub struct CheckedForm {
    /// Who sent it.
    pub viewer: Viewer,
    /// Its fields.
    pub fields: Fields,
}

impl FromRequest<AppState> for CheckedForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        CheckedForm::read(request, state, FORM_MAX_BYTES).await
    }
}

/// A [`CheckedForm`] with long text in it (the playground's prompts, up to
/// `Limits::prompts_max` lines of `Limits::prompt_max_chars`), read under the API's own body
/// bound, `Limits::body_max_bytes`, instead of [`FORM_MAX_BYTES`]. Rejects like
/// [`CheckedForm`].
#[derive(Debug)]
pub struct CheckedLongForm(pub CheckedForm);

impl FromRequest<AppState> for CheckedLongForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let max = state.config().limits.body_max_bytes;
        CheckedForm::read(request, state, max)
            .await
            .map(CheckedLongForm)
    }
}

impl CheckedForm {
    /// Who, then the form under `max` bytes, then its token (see [`CheckedForm`]).
    async fn read(request: Request, state: &AppState, max: usize) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let refuse = |e: Error| page::error(&viewer.base, &e);
        let is_form = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(refuse(Error::UnsupportedMediaType));
        }
        let bytes = axum::body::to_bytes(body, max)
            .await
            .map_err(|_| refuse(Error::BodyTooLarge { max }))?;
        let fields = Fields::parse(&bytes).map_err(refuse)?;
        if !is_valid(&viewer, fields.get("csrf").unwrap_or("")) {
            return Err(refuse(Error::InvalidCsrfToken));
        }
        Ok(CheckedForm { viewer, fields })
    }
}
