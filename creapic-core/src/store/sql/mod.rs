//! The SQL layer both databases share: every store trait implemented once, for every
//! [`SqlBackend`], over one compiler-checked seam.
//!
//! - `exec.rs` — the seam: statements and their values, where they run, how rows read, and
//!   what each driver adds (`Dialect`: lock clauses, error classification); the sqlx bounds
//!   live there and nowhere else.
//! - `backend.rs` — [`SqlBackend`]: what a store provides (its connections) and the few
//!   operations a backend may do its own way.
//! - `rows.rs` — column lists and one decoding function per row type.
//! - `orgs.rs`, `keys.rs`, `ledger.rs`, `jobs.rs`, `audit.rs`, `idempotency.rs`,
//!   `generations.rs`, `accounts.rs` — one store trait each, every statement written once.
//!
//! Statements use `$1`, `$2`, … placeholders, which both drivers accept, and only SQL both
//! databases run (`ON CONFLICT`, `RETURNING`, `UPDATE … FROM`, row values). What only
//! PostgreSQL can do (data-modifying CTEs, `unnest`, `NOTIFY`, group commit) stays in
//! `store/postgres/`, as overrides of [`SqlBackend`]'s defaults.

mod accounts;
mod audit;
pub(crate) mod backend;
pub(crate) mod exec;
mod generations;
mod idempotency;
pub(crate) mod jobs;
mod keys;
pub(crate) mod ledger;
mod orgs;
pub(crate) mod rows;
mod schema;

// The stores' ledger overrides call it from outside `sql/`.
pub(crate) use audit::insert_audit;
