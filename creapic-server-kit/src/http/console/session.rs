//! Who is looking at a console page: [`Viewer`], the extractor every signed-in page takes, and
//! the `creapic_session` cookie that carries a kit session.
//!
//! The rule, in order: the host's [`DashboardUser`] in the request extensions (its login layer
//! vouches for the person; the kit's sessions are not consulted); else the session the cookie
//! names, resolved through `Creapic::session` (which applies the idle and absolute expiry and
//! marks it used); else the request is redirected (303) to the sign-in page with `next` set to
//! where it was going. `next` is only ever followed when it is a path under the console
//! ([`safe_next`]), so the sign-in page cannot be made to send anyone elsewhere.
//!
//! The console's paths follow the mount point exactly as the API's media links do
//! ([`crate::http::mount`]): the path of `KitConfig::public_url` when it is set, else the prefix
//! the host's router stripped, else none. The cookie is scoped to that path.

use axum::extract::FromRequestParts;
use axum::response::Response;
use creapic_core::account::SessionToken;
use creapic_core::id::UserId;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use crate::http::auth::DashboardUser;
use crate::http::console::{csrf, page};
use crate::http::error::Error;
use crate::http::service::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "creapic_session";
/// Longest `next` followed after sign-in, in bytes.
pub const NEXT_MAX: usize = 512;

/// The console's base path for this request, e.g. `/console` or `/creapic/console` (see the
/// module documentation). Never rejects.
#[derive(Debug, Clone)]
pub struct Base(pub String);

impl FromRequestParts<AppState> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Base(base(state)))
    }
}

/// The console's base path: the mount point (as for media links) followed by `/console`.
pub fn base(state: &AppState) -> String {
    let prefix = match state.config().public_url.as_deref() {
        Some(url) => match url::Url::parse(url) {
            Ok(absolute) => absolute.path().to_owned(),
            Err(_) => url.to_owned(),
        },
        None => crate::http::request_id::mount()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    };
    let prefix = prefix.trim_end_matches('/');
    // The prefix goes into a cookie's `Path` and into pages: only a plain path is kept.
    let clean = prefix.starts_with('/')
        && !prefix.starts_with("//")
        && prefix.len() <= crate::http::mount::PREFIX_MAX
        && prefix.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\' | b'?' | b'#')
        });
    if clean {
        format!("{prefix}/console")
    } else {
        "/console".to_owned()
    }
}

/// The person a signed-in page is for.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Who is signed in.
    pub user: UserId,
    /// The kit session they signed in with; `None` when the host vouched for them.
    pub session: Option<SessionToken>,
    /// The CSRF token their forms carry.
    pub csrf: String,
    /// The console's base path (see [`base`]).
    pub base: String,
}

impl FromRequestParts<AppState> for Viewer {
    /// A redirect to the sign-in page, or an error page (the session store unreachable).
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let base = base(state);
        if let Some(DashboardUser(user)) = parts.extensions.get::<DashboardUser>().copied() {
            let csrf = csrf::host_token(state.console(), user);
            return Ok(Viewer {
                user,
                session: None,
                csrf,
                base,
            });
        }
        let token = token(&parts.headers);
        if let Some(token) = &token {
            match state.core().session(token).await {
                Ok(Some(session)) => {
                    return Ok(Viewer {
                        user: session.user,
                        csrf: token.csrf(),
                        session: Some(token.clone()),
                        base,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(page::error(&base, &Error::Core(e))),
            }
        }
        let rest = parts.uri.path().strip_prefix("/console").unwrap_or("");
        let next = match parts.uri.query() {
            Some(q) => format!("{base}{rest}?{q}"),
            None => format!("{base}{rest}"),
        };
        let next = safe_next(&base, &next).unwrap_or_else(|| format!("{base}/keys"));
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let mut response = page::redirect(&format!("{base}/login?next={encoded}"));
        if token.is_some() {
            // A cookie naming no live session: forget it.
            clear_cookie(&mut response, &base);
        }
        Err(response)
    }
}

/// The session token the request's cookie carries, if it is well formed.
pub fn token(headers: &HeaderMap) -> Option<SessionToken> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(SessionToken::parse)
}

/// `next` when it is a path under the console (`{base}/…`), no longer than [`NEXT_MAX`], with
/// nothing a browser could read as another host or scheme; `None` otherwise.
pub fn safe_next(base: &str, next: &str) -> Option<String> {
    let rest = next.strip_prefix(base)?;
    let ok = next.len() <= NEXT_MAX
        && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
        && !rest.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| next.to_owned())
}

/// Whether the browser reached the kit over https: the configured public URL is https, or a
/// trusted proxy ([`crate::KitConfig::trust_forwarded_for`]) says so in `X-Forwarded-Proto`.
pub fn is_https(state: &AppState, headers: &HeaderMap) -> bool {
    let config = state.config();
    let public = config.public_url.as_deref().is_some_and(|u| {
        u.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    });
    let forwarded = config.trust_forwarded_for.get() > 0
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    public || forwarded
}

/// Sets the session cookie: scoped to the console's path, HttpOnly, SameSite=Lax, Secure over
/// https, living as long as the session's absolute lifetime.
pub fn set_cookie(
    response: &mut Response,
    base: &str,
    token: &SessionToken,
    max_age_secs: u64,
    secure: bool,
) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path={base}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}",
        token.expose()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, value);
    }
}

/// Tells the browser to drop the session cookie.
pub fn clear_cookie(response: &mut Response, base: &str) {
    let cookie = format!("{COOKIE}=; Path={base}; Max-Age=0; HttpOnly; SameSite=Lax");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_followed_only_under_the_console() {
        let cases: &[(&str, &str, bool)] = &[
            ("/console", "/console/keys", true),
            ("/console", "/console/keys?org=1", true),
            ("/console", "/console", true),
            ("/creapic/console", "/creapic/console/keys", true),
            ("/console", "/consoleevil", false),
            ("/console", "//evil.example/console/keys", false),
            ("/console", "https://evil.example/console", false),
            ("/console", "/console//evil.example", false),
            ("/console", "/console/\\evil", false),
            ("/console", "/console/a b", false),
            ("/console", "/api/keys", false),
        ];
        for (base, next, ok) in cases {
            assert_eq!(safe_next(base, next).is_some(), *ok, "{base} {next}");
        }
        let long = format!("/console/{}", "a".repeat(NEXT_MAX));
        assert!(safe_next("/console", &long).is_none());
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let token = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {COOKIE}={token}; b=2")).unwrap(),
        );
        assert_eq!(token_of(&headers), Some(token));
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("creapic_session=short"),
        );
        assert_eq!(token_of(&headers), None);
    }

    fn token_of(headers: &HeaderMap) -> Option<String> {
        token(headers).map(|t| t.expose().to_owned())
    }
}
