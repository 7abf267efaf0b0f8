//! How every console answer leaves: HTML with the console's security headers, redirects, and
//! errors as sentences on a page.
//!
//! Every page carries a strict Content-Security-Policy ([`CONTENT_SECURITY_POLICY`]: scripts,
//! styles and forms from the console's own origin only, no inline code, never framed),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` and `Cache-Control:
//! no-store` (a page may show a key once; no cache keeps it). An error's status is the one
//! table's ([`Error::status`]); its sentence ([`sentence`]) is written for the person reading
//! the page, and never includes what only the log should see (store messages, internals).

use askama::Template;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use creapic_core::clock::Timestamp;

use crate::http::console::frame::Frame;
use crate::http::console::session::Base;
use crate::http::error::Error;

/// The console pages' Content-Security-Policy (`connect-src 'self'`: the console's own script
/// fetches a playground job's progress section).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The error page.
#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    frame: Frame,
    title: &'a str,
    sentence: &'a str,
}

/// `template` rendered as a page with `status` (a template that fails to render is a 500
/// page with a fixed text: templates are checked at compile time, so that is a bug).
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>Something went wrong on our side.</p>"
                    .to_owned(),
            )
        }
    }
}

/// An HTML body with the console's headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(headers);
    response
}

/// The headers every console answer carries (pages, redirects, assets add their own caching).
fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A file to save (`Content-Disposition: attachment`), with the console's headers.
/// `filename` is one the console built (letters, digits, `-`, `.`).
pub fn download(filename: &str, content_type: &'static str, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    secure(headers);
    response
}

/// A 303 to `location` (a path the console built).
pub fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    secure(headers);
    response
}

/// `error` as a page: its status from the one table, `Retry-After` where it has one, and its
/// [`sentence`].
pub fn error(base: &str, error: &Error) -> Response {
    if error.is_internal() || error.status().is_server_error() {
        tracing::warn!(error = %error, code = error.code(), "console request failed");
    }
    let status = error.status();
    let sentence = sentence(error);
    let title = status.canonical_reason().unwrap_or("Error");
    let mut response = render(
        status,
        &ErrorPage {
            frame: Frame::signed_out(base),
            title,
            sentence: &sentence,
        },
    );
    if let Some(after) = error.retry_after() {
        let secs = after.as_secs().max(1);
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// What a person reads for `error`: one sentence, ending with a full stop.
pub fn sentence(error: &Error) -> String {
    use creapic_core::Error as C;
    let text = match error.core() {
        Some(C::InvalidCredentials) => {
            "The e-mail or the password is wrong. Check both and try again.".to_owned()
        }
        Some(C::NotFound {
            resource: "organization",
        }) => "There is no such organization, or you are not a member of it.".to_owned(),
        Some(C::NotFound { resource }) => {
            format!("There is no such {resource} in this organization.")
        }
        Some(C::Forbidden { action }) => {
            format!("Only an owner or admin of this organization may {action}.")
        }
        // The 001 document's words for 402: "Insufficient credits", "No credits remaining".
        Some(C::InsufficientCredits {
            needed,
            available: 0,
        }) => format!(
            "Insufficient credits: no credits remaining (this needs {needed} credits). Nothing \
             was charged."
        ),
        Some(C::InsufficientCredits { needed, available }) => format!(
            "Insufficient credits: this needs {needed} credits and the organization has \
             {available}. Nothing was charged."
        ),
        Some(C::LimitExceeded {
            what: "prompts per job",
            max,
        }) => format!("Too many prompts: a job takes at most {max}, one per line."),
        Some(C::IdempotencyConflict) => "This form was already sent with other values. Reload \
             the page and send it again."
            .to_owned(),
        Some(C::IdempotencyInProgress) => "This form was already sent and is still being \
             worked on, or did not finish. Reload the page to send it again."
            .to_owned(),
        Some(C::Store { .. }) if error.status() == StatusCode::SERVICE_UNAVAILABLE => {
            "The database cannot be reached right now. Try again in a moment.".to_owned()
        }
        Some(C::Store { .. }) => {
            "Something went wrong on our side. Try again; if it keeps happening, tell the \
             operator."
                .to_owned()
        }
        Some(other) => other.to_string(),
        None => match error {
            Error::InvalidCsrfToken => "This form has expired or did not come from this \
                 console. Go back, reload the page and send it again."
                .to_owned(),
            Error::RateLimited { retry_after } => format!(
                "Too many sign-in attempts for this account or from this address. Try again \
                 in {} minutes.",
                retry_after.as_secs().div_ceil(60).max(1)
            ),
            Error::Overloaded { .. } => {
                "Too many people are signing in right now. Try again in a few seconds.".to_owned()
            }
            Error::RouteNotFound => "There is no such page in the console.".to_owned(),
            Error::MethodNotAllowed => "This page cannot be used that way.".to_owned(),
            Error::BodyTooLarge { max } => {
                format!("The form is too large: at most {max} bytes are accepted.")
            }
            Error::UnsupportedMediaType => "The console accepts forms only.".to_owned(),
            Error::InvalidParameter { name, message } => format!("The {name} {message}"),
            e if e.is_internal() => {
                "Something went wrong on our side. Try again; if it keeps happening, tell the \
                 operator."
                    .to_owned()
            }
            other => other.to_string(),
        },
    };
    finish(&text)
}

/// `text` with a capital first letter and a final full stop.
fn finish(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// The error of a page whose query string is not what it expects (400).
pub fn bad_query() -> Error {
    Error::InvalidParameter {
        name: "query",
        message: "is not what this page expects".into(),
    }
}

/// A time as a page shows it: `2026-12-01 04:30 UTC`, with the RFC 3339 text for `<time>`.
#[derive(Debug, Clone)]
pub struct When {
    /// What the reader sees.
    pub text: String,
    /// The `datetime` attribute.
    pub iso: String,
}

impl When {
    /// `t` as a page shows it.
    pub fn of(t: Timestamp) -> Self {
        let iso = t.to_rfc3339();
        let text = match (iso.get(..10), iso.get(11..16)) {
            (Some(day), Some(minute)) => format!("{day} {minute} UTC"),
            _ => iso.clone(),
        };
        When { text, iso }
    }
}

/// A page's `after` query parameter (the last item of the previous page), read with `parse`:
/// absent is the first page; anything `parse` refuses is a 400 saying it "must be `what`".
pub fn after<T, E>(
    text: Option<&str>,
    parse: impl Fn(&str) -> Result<T, E>,
    what: &str,
) -> Result<Option<T>, Error> {
    text.map(parse)
        .transpose()
        .map_err(|_| Error::InvalidParameter {
            name: "after",
            message: format!("must be {what}"),
        })
}

/// The page for a console path that does not exist.
pub async fn not_found(Base(base): Base) -> Response {
    error(&base, &Error::RouteNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use creapic_core::Error as C;

    #[test]
    fn errors_read_as_sentences() {
        let cases: Vec<(Error, &str)> = vec![
            (
                C::Forbidden {
                    action: "create keys",
                }
                .into(),
                "Only an owner or admin of this organization may create keys.",
            ),
            (
                C::LimitExceeded {
                    what: "active keys per organization",
                    max: 100,
                }
                .into(),
                "Active keys per organization exceeds the limit of 100.",
            ),
            (
                C::store(
                    creapic_core::StoreErrorKind::Other,
                    "relation x: secret detail",
                )
                .into(),
                "Something went wrong on our side. Try again; if it keeps happening, tell the \
                 operator.",
            ),
            (
                C::InsufficientCredits {
                    needed: 3,
                    available: 0,
                }
                .into(),
                "Insufficient credits: no credits remaining (this needs 3 credits). Nothing was \
                 charged.",
            ),
            (
                C::LimitExceeded {
                    what: "prompts per job",
                    max: 100,
                }
                .into(),
                "Too many prompts: a job takes at most 100, one per line.",
            ),
            (
                Error::RateLimited {
                    retry_after: std::time::Duration::from_secs(61),
                },
                "Too many sign-in attempts for this account or from this address. Try again \
                 in 2 minutes.",
            ),
            (
                Error::InvalidParameter {
                    name: "from date",
                    message: "must be a day written YYYY-MM-DD".into(),
                },
                "The from date must be a day written YYYY-MM-DD.",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(sentence(&error), expected);
        }
    }
}
