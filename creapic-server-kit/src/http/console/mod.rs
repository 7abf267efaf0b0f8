//! The web console: pages a person signs in to and manages an organization's API keys with,
//! reads its credits and audit log, manages its members, and runs images in its playground,
//! served by the kit next to the API under `/console` (sign-in at `/console/login`).
//!
//! Design decisions:
//! - **Who is signed in** is the host's [`DashboardUser`](crate::http::auth::DashboardUser)
//!   when its login layer put one into the request extensions; otherwise the kit's own session,
//!   the `creapic_session` cookie resolved through `Creapic::session` ([`session`]). So a host
//!   with its own login gets the pages without the kit's sessions, and `creapic serve` gets a
//!   real login.
//! - **Server-rendered HTML** from askama templates checked at compile time
//!   (`templates/console/`), no JavaScript framework: every page works without scripts. The one
//!   script (a copy button, the playground's job progress) and the stylesheet ship inside the crate ([`assets`]); pages carry a
//!   strict Content-Security-Policy that forbids inline scripts and styles ([`page`]).
//! - **Every state-changing form carries a CSRF token** checked before its fields are read
//!   ([`csrf`]); every error, the core's included, is shown as a sentence on a page, never as
//!   JSON, with the status the one table of [`crate::http::error`] gives.
//! - **Sign-in is bounded** ([`Console`]): Argon2 costs tens of milliseconds of CPU, so at most
//!   [`SIGN_INS_AT_ONCE`] run at once, on the blocking pool (never on the API's workers), and
//!   failed sign-ins are limited per e-mail and per client address ([`login`], [`budget`]).
//!
//! Console routes are pages, not operations of the API: they are not in the OpenAPI document.

pub mod assets;
pub mod audit;
pub mod budget;
pub mod chart;
pub mod credits;
pub mod csrf;
pub mod frame;
pub mod keys;
pub mod login;
pub mod members;
pub mod page;
pub mod playground;
pub mod session;

use creapic_core::auth::ClientAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{MethodRouter, get};

use crate::http::console::budget::FailureBudget;

use crate::http::service::AppState;

/// Sign-ins (Argon2 verifications) running at once; more wait, at most [`SIGN_IN_WAIT_MAX`].
pub const SIGN_INS_AT_ONCE: usize = 4;
/// Longest a sign-in waits for its turn before it is answered 503 (try again).
pub const SIGN_IN_WAIT_MAX: Duration = Duration::from_secs(10);
/// Failed sign-ins one e-mail may have per [`SIGN_IN_WINDOW`].
pub const SIGN_INS_PER_EMAIL: u32 = 5;
/// Failed sign-ins one client address (an IPv4 address or an IPv6 /64) may have per
/// [`SIGN_IN_WINDOW`].
pub const SIGN_INS_PER_ADDRESS: u32 = 20;
/// The window of the sign-in budgets, from an e-mail's or address's first failure.
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// E-mails (and, separately, addresses) a sign-in budget remembers: bounds its memory whatever
/// an attacker sends (see [`budget`] for what is forgotten first).
pub const SIGN_IN_KEYS_MAX: usize = 10_000;

/// The console's own state, inside [`AppState`]: the sign-in permits and budgets, and the key
/// of the CSRF tokens of people the host signed in.
pub struct Console {
    sign_ins: tokio::sync::Semaphore,
    per_email: Arc<FailureBudget<String>>,
    per_address: Arc<FailureBudget<ClientAddr>>,
    /// A host's signed-in people have no kit session to derive their CSRF token from, so theirs
    /// is an HMAC of their user id under this key (see [`csrf`]). The kit derives it from the
    /// media signing key, which every replica of a host shares.
    host_csrf_key: [u8; 32],
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// Fresh budgets, [`SIGN_INS_AT_ONCE`] permits, and `host_csrf_key` for the CSRF tokens of
    /// people the host signs in (the same on every replica, or their forms fail across them).
    pub fn new(host_csrf_key: [u8; 32]) -> Self {
        Console {
            sign_ins: tokio::sync::Semaphore::new(SIGN_INS_AT_ONCE),
            per_email: Arc::new(FailureBudget::new(
                SIGN_INS_PER_EMAIL,
                SIGN_IN_WINDOW,
                SIGN_IN_KEYS_MAX,
            )),
            per_address: Arc::new(FailureBudget::new(
                SIGN_INS_PER_ADDRESS,
                SIGN_IN_WINDOW,
                SIGN_IN_KEYS_MAX,
            )),
            host_csrf_key,
        }
    }
}

/// The console's routes, with their full paths (`/console/…`), each with its template: the
/// kit's route table ([`crate::http::routes`]) names and measures each one, then merges them.
pub fn routes() -> [(&'static str, MethodRouter<AppState>); 19] {
    [
        (
            "/console",
            get(|session::Base(base): session::Base| async move {
                page::redirect(&format!("{base}/keys"))
            }),
        ),
        ("/console/login", get(login::form).post(login::sign_in)),
        ("/console/logout", axum::routing::post(login::sign_out)),
        ("/console/keys", get(keys::list).post(keys::create)),
        (
            "/console/keys/{id}/delete",
            get(keys::confirm_delete).post(keys::delete),
        ),
        ("/console/credits", get(credits::show)),
        ("/console/audit", get(audit::show)),
        ("/console/audit.csv", get(audit::export)),
        ("/console/members", get(members::list).post(members::add)),
        (
            "/console/members/{user}/role",
            axum::routing::post(members::change_role),
        ),
        (
            "/console/members/{user}/remove",
            get(members::confirm_remove).post(members::remove),
        ),
        (
            "/console/playground",
            get(playground::page).post(playground::submit),
        ),
        (
            "/console/playground/generate",
            axum::routing::post(playground::generate),
        ),
        ("/console/playground/jobs/{id}", get(playground::job)),
        (
            "/console/playground/jobs/{id}/progress",
            get(playground::progress),
        ),
        (
            "/console/playground/jobs/{id}/cancel",
            axum::routing::post(playground::cancel),
        ),
        (assets::STYLE_PATH, get(assets::style)),
        (assets::SCRIPT_PATH, get(assets::script)),
        (
            "/console/{*rest}",
            get(page::not_found).post(page::not_found),
        ),
    ]
}
