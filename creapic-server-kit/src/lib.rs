//! # creapic-server-kit
//!
//! Everything a host needs to serve the creapic API: the HTTP handlers of both product documents
//! behind one `tower::Service` (whose error is `Infallible`: every failure is a response), the
//! image generation providers (Gemini, OpenAI-compatible, and an offline renderer), media storage,
//! and the durable job runner. Hosts bring a `creapic_core` store and mount the service in axum,
//! hyper or anything that speaks `tower`, then start [`upkeep::Upkeep`]: the job runner and the
//! periodic tasks (last-used flush, retention purges, abandoned holds, stale uploads) some of
//! the API's promises need. A host that tells the kit each request's client address
//! ([`PeerAddr`]) gets it audited and its failed authentications limited.
//!
//! The kit is two module trees and the pieces that join them:
//!
//! - [`http`] — the API over HTTP: routes, handlers, extractors, the error type and its one
//!   code → status table, OpenAPI, rate limits, request ids, idempotency.
//! - [`generation`] — making images: providers, prompts, rendering, media storage, the
//!   pipeline, the paid synchronous flow, the job runner and webhooks.
//! - [`config`] (settings both trees read) and [`upkeep`] (the background work of both).
//!
//! The generation tree never imports the HTTP tree; HTTP calls generation, never the reverse
//! (`tests/module_trees.rs` checks it). [`Core`] is the core as both trees hold it.
//!
//! ## Features
//!
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
pub mod generation;
pub mod http;
pub mod log_writer;
pub mod telemetry;
pub mod upkeep;

/// The core service over any store: what both trees call into.
pub type Core = std::sync::Arc<creapic_core::Creapic<dyn creapic_core::store::Store>>;

pub use config::{Limits, Pricing, RateLimitConfig, TrustedProxies};
pub use http::Error;
pub use http::peer::PeerAddr;
pub use http::service::{AppState, CreapicService, KitConfig, ServiceBuilder};
