//! Making images: providers and prompt composition, rendering and compositing, media storage,
//! the pipeline that strings them together, the paid synchronous flow, the durable job runner
//! and webhook delivery. Nothing here knows the API's requests, responses or statuses (the
//! providers' and webhooks' own outgoing HTTP aside), and nothing here imports the HTTP tree: from
//! the crate root this tree reaches only itself, `config` and `Core` (`tests/module_trees.rs` reads
//! the sources and checks it). Failures are [`Error`], which the HTTP tree wraps and answers.

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
