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

pub mod auth;
pub mod body;
pub mod config;
pub mod contract;
pub mod error;
pub mod extract;
pub mod finished_status;
pub mod handlers;
pub mod idempotent;
pub mod measure;
pub mod mount;
pub mod openapi;
pub mod peer;
pub mod rate_limit;
pub mod reference;
pub mod request_id;
pub mod response;
pub mod routes;
pub mod service;
pub mod views;

pub use config::{Limits, Pricing, RateLimitConfig, TrustedProxies};
pub use error::Error;
pub use peer::PeerAddr;
pub use service::{AppState, CreapicService, KitConfig, ServiceBuilder};
pub mod item;
pub mod media;
pub mod paid;
pub mod pipeline;
pub mod prompt;
pub mod provider;
pub mod render;
pub mod retry;
pub mod runner;
pub mod scene;
pub mod upkeep;
pub mod webhook;
