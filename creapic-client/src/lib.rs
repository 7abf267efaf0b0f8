//! # creapic-client
//!
//! A typed async client of the creapic HTTP API: every endpoint of both product documents,
//! waiters for bulk jobs and scene renders, one typed error, and retries that never charge
//! twice.
//!
//! ```no_run
//! # async fn run() -> creapic_client::Result<()> {
//! use creapic_client::{Client, WaitOptions};
//!
//! // AI_MEDIA_MAKER_API_KEY=wi_live_… and, for your own server, CREAPIC_BASE_URL=http://…
//! let client = Client::from_env()?;
//! let image = client.images().generate_text("Citrus mocktails, summer light").await?;
//! let file = client.media().download(&image.image_url).await?;
//! std::fs::write(format!("image.{}", file.extension()), &file.bytes).ok();
//!
//! let job = client.playground().create(["A sunset over the ocean", "A futuristic city"]).await?;
//! let done = client
//!     .playground()
//!     .wait_for_job(&job.job_id, WaitOptions::default())
//!     .on_progress(|p| eprintln!("{}/{}", p.completed + p.failed, p.total))
//!     .await?;
//! # let _ = done; Ok(()) }
//! ```
//!
//! The design decision that shapes the crate: **a retry is the same request.** Every POST
//! carries an `Idempotency-Key`, generated when the call is built (or set with
//! [`PostCall::idempotency_key`]), and every retry repeats it; the server answers a repeat
//! from its stored response (`Idempotent-Replayed: true`) instead of charging again. That makes
//! retrying safe for every call, so the [`retry`] classifiers only ask whether a retry could
//! succeed.
//!
//! The request and response bodies are `creapic_core::wire`'s types (re-exported as [`wire`]),
//! compiled into both this crate and the server kit, so the two cannot drift. The API key lives
//! in [`ApiKeySecret`] (format-checked before any request, zeroized, redacted in `Debug`) and is
//! sent only as `Authorization` on public routes — never on dashboard calls, media downloads
//! or in logs.
//!
//! ## Features
//!
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
pub mod error;
pub mod paginate;
pub mod resources;
pub mod retry;
pub mod time;
pub mod wait;

mod client;

pub use client::{
    Call, Client, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_MAX_LEN, IDEMPOTENT_REPLAYED, PostCall,
    REQUEST_ID, RateLimit, Response, ResponseMeta,
};
pub use config::{ClientBuilder, DashboardAuth};
pub use creapic_core::key::ApiKeySecret;
pub use creapic_core::wire;
pub use error::{ApiError, Error, ErrorCode, Result};
pub use paginate::{Paged, Paginator};
pub use retry::RetryPolicy;
pub use wait::{ExceededMaxWait, Progress, Wait, WaitOptions};
