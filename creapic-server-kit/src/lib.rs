//! # creapic-server-kit
//!
//! Everything a host needs to serve the creapic API: the HTTP handlers of both product documents
//! behind one `tower::Service` (whose error is `Infallible`: every failure is a response), the
//! image generation providers (Gemini, OpenAI-compatible, and an offline renderer), media storage,
//! and the durable job runner. Hosts bring a `creapic_core` store and mount the service in axum,
//! hyper or anything that speaks `tower`.

pub mod error;

pub use error::Error;
pub mod item;
pub mod media;
pub mod pipeline;
pub mod prompt;
pub mod provider;
pub mod render;
pub mod retry;
pub mod scene;
pub mod runner;
pub mod webhook;
