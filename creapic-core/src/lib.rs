//! # creapic-core
//!
//! The service logic of creapic, a metered AI-media API secured by organization-scoped API keys:
//! keys, scopes, organizations, the credit ledger with holds, jobs and audit, as pure logic over
//! async store traits.
//!
//! - [`Creapic`] is the entry point: it validates, authorizes, mints ids and audit events, and
//!   hands each change to a [`store::Store`] as one atomic call.
//! - [`store::memory::MemoryStore`] is a complete in-memory backend; SQLite and PostgreSQL
//!   backends implement the same traits and pass the same conformance suite
//!   (`testing::conformance`, behind the `testing` feature).
//! - Time comes from a [`clock::Clock`], randomness from a [`random::RandomSource`]: tests inject
//!   both and get identical runs.
//!
//! Core knows nothing about HTTP or SQL. Errors carry stable codes ([`Error::code`]); the server
//! kit decides their HTTP status.
//!
//! ```
//! use std::sync::Arc;
//! use creapic_core::{Creapic, KeySpec, audit::{Actor, RequestContext}, key::KeyMode,
//!     scope::{Scope, ScopeSet}, store::memory::MemoryStore};
//!
//! # tokio_test_block(async {
//! let core = Creapic::new(Arc::new(MemoryStore::new()));
//! let ctx = RequestContext::default();
//! let owner = core.ensure_user("owner@example.com").await?;
//! let org = core.create_org("Acme", owner.id, Actor::Operator, &ctx).await?;
//! let spec = KeySpec { name: "Production".into(), scopes: ScopeSet::only(Scope::ImageGeneration),
//!     mode: KeyMode::Live, expires_at: None };
//! let created = core.create_key(Actor::User(owner.id), org.id, spec, &ctx).await?;
//! let header = format!("Bearer {}", created.secret.expose());
//! let who = core.authenticate(Some(header.as_bytes()), None).await?;
//! assert_eq!(who.org, org.id);
//! # Ok::<(), creapic_core::Error>(()) });
//! # fn tokio_test_block<F: std::future::Future<Output = Result<(), creapic_core::Error>>>(f: F) {
//! #     tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f).expect("ok")
//! # }
//! ```
//!
//! ## Features
//!
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod account;
pub mod audit;
pub mod audit_chain;
pub mod auth;
pub mod caller;
pub mod clock;
pub mod error;
pub mod finished_jobs;
pub mod generation;
pub mod id;
pub mod idempotency;
mod in_flight;
pub mod job;
pub mod key;
pub mod ledger;
pub mod org;
pub mod page;
pub mod random;
pub mod scope;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "wire")]
pub mod wire;

pub use auth::Principal;
pub use caller::Caller;
pub use error::{Error, Result, StoreErrorKind};
pub use service::{CoreConfig, Creapic, CreapicBuilder, CreatedKey, JobSpec, KeySpec};
