//! Signing in and out of the console.
//!
//! `GET /console/login` shows the form; `POST /console/login` checks the e-mail and password
//! (`Creapic::sign_in`, Argon2id), sets the session cookie and sends the person on to `next`;
//! `POST /console/logout` (a form with its CSRF token) ends the session and clears the cookie.
//!
//! Sign-in is the console's one expensive request, so it is bounded three ways before Argon2
//! runs: the e-mail and the client address each have a budget of failed sign-ins
//! ([`super::SIGN_INS_PER_EMAIL`], [`super::SIGN_INS_PER_ADDRESS`] per
//! [`super::SIGN_IN_WINDOW`]; either spent is a 429 with a sentence), and the verification
//! waits for one of [`super::SIGN_INS_AT_ONCE`] permits (at most [`super::SIGN_IN_WAIT_MAX`],
//! then 503) and runs on the blocking pool, so a flood of sign-ins never occupies the workers
//! that serve the API. An attempt counts against both budgets while it runs and is taken back
//! when it succeeds ([`super::budget`]): only failures remain counted, and attempts racing in
//! parallel cannot all slip under the limit. A wrong password and an unknown e-mail read the
//! same and cost the same (the core verifies a decoy hash).

use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::response::Response;
use creapic_core::account::Password;
use creapic_core::auth::ClientAddr;
use http::StatusCode;
use serde::Deserialize;

use crate::http::console::budget::Attempt;
use crate::http::console::csrf::{CheckedForm, FORM_MAX_BYTES, Fields};
use crate::http::console::frame::Frame;
use crate::http::console::page;
use crate::http::console::session::{self, Base};
use crate::http::console::{Console, SIGN_IN_WAIT_MAX};
use crate::http::error::Error;
use crate::http::service::AppState;

/// Longest e-mail a budget is kept under, in bytes (longer ones share the budget of their
/// first bytes; no real address is that long).
const EMAIL_KEY_MAX: usize = 254;

/// The sign-in page.
#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    frame: Frame,
    next: &'a str,
    email: &'a str,
    error: Option<String>,
}

fn login_page(
    base: &str,
    status: StatusCode,
    next: &str,
    email: &str,
    error: Option<&Error>,
) -> Response {
    let mut response = page::render(
        status,
        &LoginPage {
            frame: Frame::signed_out(base),
            next,
            email,
            error: error.map(page::sentence),
        },
    );
    if let Some(after) = error.and_then(Error::retry_after)
        && let Ok(value) = http::HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    response
}

/// Query of `GET /console/login`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Where to go after signing in (followed only under the console).
    pub next: Option<String>,
}

/// `GET /console/login`: the form.
pub async fn form(Base(base): Base, query: Result<Query<LoginQuery>, QueryRejection>) -> Response {
    let next = query
        .ok()
        .and_then(|Query(q)| q.next)
        .and_then(|n| session::safe_next(&base, &n))
        .unwrap_or_else(|| format!("{base}/keys"));
    login_page(&base, StatusCode::OK, &next, "", None)
}

/// A sign-in form as posted, with what the budgets key on.
#[derive(Debug)]
pub struct SignInForm {
    base: String,
    email: String,
    password: String,
    next: String,
    client: Option<ClientAddr>,
    https: bool,
}

impl FromRequest<AppState> for SignInForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let base = session::base(state);
        let bytes = axum::body::to_bytes(body, FORM_MAX_BYTES)
            .await
            .map_err(|_| {
                page::error(
                    &base,
                    &Error::BodyTooLarge {
                        max: FORM_MAX_BYTES,
                    },
                )
            })?;
        let fields = Fields::parse(&bytes).map_err(|e| page::error(&base, &e))?;
        let next = fields
            .get("next")
            .and_then(|n| session::safe_next(&base, n))
            .unwrap_or_else(|| format!("{base}/keys"));
        let client = crate::http::handlers::forwarded_for(
            &parts.headers,
            state.config().trust_forwarded_for,
        )
        .or_else(crate::http::request_id::peer)
        .or_else(|| crate::http::peer::peer_ip(&parts.extensions))
        .map(ClientAddr::of);
        Ok(SignInForm {
            email: fields.get("email").unwrap_or("").trim().to_owned(),
            password: fields.get("password").unwrap_or("").to_owned(),
            next,
            client,
            https: session::is_https(state, &parts.headers),
            base,
        })
    }
}

/// `POST /console/login`: signs in and redirects to `next`, or shows the form again with a
/// sentence (401 wrong e-mail or password, 429 too many attempts, 503 too busy).
pub async fn sign_in(State(state): State<AppState>, form: SignInForm) -> Response {
    let SignInForm {
        base,
        email,
        password,
        next,
        client,
        https,
    } = form;
    let again = |e: &Error| login_page(&base, e.status(), &next, &email, Some(e));
    let attempts = match begin_attempt(state.console(), &email, client) {
        Ok(attempts) => attempts,
        Err(e) => return again(&e),
    };
    let permit =
        match tokio::time::timeout(SIGN_IN_WAIT_MAX, state.console().sign_ins.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return again(&Error::Overloaded {
                    retry_after: Duration::from_secs(5),
                });
            }
        };
    let password = match Password::presented(password) {
        Ok(p) => p,
        Err(e) => return again(&Error::Core(e)),
    };
    // Argon2 on the blocking pool: the API's workers never wait for a hash.
    let core = state.core().clone();
    let runtime = tokio::runtime::Handle::current();
    let who = email.clone();
    let signed_in = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move { core.sign_in(&who, &password).await })
    })
    .await;
    drop(permit);
    let (token, session) = match signed_in {
        Ok(Ok(done)) => {
            let (by_email, by_address) = attempts;
            by_email.succeeded();
            if let Some(by_address) = by_address {
                by_address.succeeded();
            }
            done
        }
        Ok(Err(e)) => return again(&Error::Core(e)),
        Err(e) => {
            return again(&Error::Internal {
                message: format!("sign-in task failed: {e}"),
            });
        }
    };
    let max_age = session.expires_at.since(session.created_at).as_secs();
    let mut response = page::redirect(&next);
    session::set_cookie(&mut response, &base, &token, max_age, https);
    response
}

/// Counts an attempt against the e-mail's and the address's failure budgets (taken back by
/// `succeeded`); `RateLimited` when either has none left, until the later of the two windows
/// ends. A refused attempt is not counted.
fn begin_attempt(
    console: &Console,
    email: &str,
    client: Option<ClientAddr>,
) -> Result<(Attempt<String>, Option<Attempt<ClientAddr>>), Error> {
    let mut key = email.to_lowercase();
    if key.len() > EMAIL_KEY_MAX {
        let mut end = EMAIL_KEY_MAX;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    let by_address = client
        .map(|addr| console.per_address.begin(addr))
        .transpose();
    let by_email = console.per_email.begin(key);
    match (by_email, by_address) {
        (Ok(email), Ok(address)) => Ok((email, address)),
        (Err(a), Err(b)) => Err(Error::RateLimited {
            retry_after: a.max(b),
        }),
        // The one taken is handed back: a refused attempt costs nothing.
        (Ok(taken), Err(wait)) => {
            taken.succeeded();
            Err(Error::RateLimited { retry_after: wait })
        }
        (Err(wait), Ok(taken)) => {
            if let Some(taken) = taken {
                taken.succeeded();
            }
            Err(Error::RateLimited { retry_after: wait })
        }
    }
}

/// `POST /console/logout`: ends the session (the CSRF token checked first), clears the cookie
/// and shows the sign-in page. A person the host signed in is sent to the sign-in page only:
/// their session is the host's.
pub async fn sign_out(State(state): State<AppState>, form: CheckedForm) -> Response {
    let base = form.viewer.base;
    if let Some(token) = &form.viewer.session
        && let Err(e) = state.core().sign_out(token).await
    {
        return page::error(&base, &Error::Core(e));
    }
    let mut response = page::redirect(&format!("{base}/login"));
    session::clear_cookie(&mut response, &base);
    response
}
