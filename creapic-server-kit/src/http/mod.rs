//! The API over HTTP: the route table and its handlers, the extractors that authenticate and
//! bound each request, idempotency, rate limits, request ids, the error bodies and the OpenAPI
//! document, and the web console's pages ([`console`]). Handlers read who, what, call, reply: the work itself is a call into
//! [`crate::generation`] or `creapic_core`.

pub mod auth;
pub mod body;
pub mod console;
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

pub use error::Error;
