//! Making images: providers and prompt composition, rendering and compositing, media storage,
//! the pipeline that strings them together, the paid synchronous flow, the durable job runner
//! and webhook delivery. Nothing here knows about HTTP requests or responses.

pub mod error;
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
pub mod webhook;

pub use error::Error;
