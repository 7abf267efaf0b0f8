//! The seam between the shared SQL and the two drivers: a statement with its values ([`Stmt`]),
//! where it runs ([`Exec`]), how a row reads ([`Columns`]) and what a driver adds ([`Dialect`]).
//!
//! Design decision: the shared statements never name a driver type. [`Exec`] and [`Columns`]
//! are implemented once, generically, for every sqlx connection and row whose database binds and
//! decodes the five column types both schemas use (uuid, 64-bit integer, text, bytes, boolean)
//! and classifies its errors ([`Dialect`]). The bounds that make that true are written here and
//! nowhere else: the stores' code sees `Stmt`, `Exec` and `Columns`, and the compiler checks each
//! driver against them where `SqliteStore` and `PgStore` are declared SQL backends. Values are
//! bound from [`Arg`], a closed set, so a shared statement can only carry what both schemas store.
//!
//! Design decision: **statement texts are built by the compiler, never per call.** A statement
//! made of constants only is one `concat!` of literals and the column-list macros of `rows.rs`
//! (`key_columns!`, …), a `&'static str` run with [`stmt`]. A statement that splices a
//! dialect's clause ([`Dialect::ROW_LOCK`], [`Dialect::CLAIM_LOCK`]) is assembled by [`const_sql!`]:
//! an inline `const` block, evaluated at compile time once per database the generic store code is
//! instantiated for (a [`SqlText`] of at most [`SQL_TEXT_MAX`] bytes in the binary; a longer
//! statement fails the build). Rejected alternatives: a `LazyLock` per statement per database
//! (Rust has no generic statics, so each would need a hand-written table per driver, and a
//! first-call cost and a lock check on every call) and a `Dialect` associated const per
//! statement (every statement would move out of the file that owns it). Only statements whose
//! number of placeholders varies (the multi-row `VALUES` inserts) are built at run time, with
//! [`built`]: one `String` sized up front, placeholders appended by [`push_param`].

use std::fmt::Write as _;
use std::future::Future;

use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreErrorKind};
use crate::ledger::Credits;

/// What a driver adds to sqlx's `Database`: its lock clauses, how its database errors are
/// classified, and the rows a write changed.
pub(crate) trait Dialect: Database {
    /// Appended to a `SELECT` that must lock its rows until the transaction ends
    /// (PostgreSQL: `FOR UPDATE`; SQLite: nothing, a write transaction already holds the
    /// database's one write lock).
    const ROW_LOCK: &'static str;
    /// Appended to the job claim's inner `SELECT`: what keeps two runners off one job
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: nothing, one writer).
    const CLAIM_LOCK: &'static str;

    /// What an error the database itself reported means: the one place its codes are read.
    fn database_error_kind(e: &dyn sqlx::error::DatabaseError) -> StoreErrorKind;
    /// The rows a write changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// A sqlx error as the core's store error. Messages name the failure, never bound values
    /// (and stores only see digests anyway).
    fn map_error(e: sqlx::Error) -> Error {
        use sqlx::Error as E;
        let kind = match &e {
            E::Database(db) => match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => StoreErrorKind::Conflict,
                _ => Self::database_error_kind(db.as_ref()),
            },
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
                StoreErrorKind::Unavailable
            }
            E::ColumnDecode { .. }
            | E::Decode(_)
            | E::ColumnNotFound(_)
            | E::ColumnIndexOutOfBounds { .. }
            | E::TypeNotFound { .. } => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Other,
        };
        Error::store(kind, format!("{}: {e}", <Self as Database>::NAME))
    }
}

/// Longest statement text [`const_sql!`] assembles, in bytes: each such statement takes this much
/// read-only memory once per database, and a longer one fails the build.
pub(crate) const SQL_TEXT_MAX: usize = 1024;

/// A statement text assembled at compile time from constant parts ([`const_sql!`]).
#[derive(Debug)]
pub(crate) struct SqlText {
    bytes: [u8; SQL_TEXT_MAX],
    len: usize,
}

impl SqlText {
    /// `parts` one after another. Only called in `const` context: an overlong statement is a
    /// compile error, not a panic at run time.
    pub(crate) const fn join(parts: &[&str]) -> Self {
        let mut bytes = [0u8; SQL_TEXT_MAX];
        let mut len = 0;
        let mut p = 0;
        while p < parts.len() {
            let part = parts[p].as_bytes();
            let mut i = 0;
            while i < part.len() {
                assert!(len < SQL_TEXT_MAX, "statement longer than SQL_TEXT_MAX");
                bytes[len] = part[i];
                len += 1;
                i += 1;
            }
            p += 1;
        }
        SqlText { bytes, len }
    }

    /// The text. Whole `&str`s joined are UTF-8; the check runs at compile time.
    pub(crate) const fn as_str(&'static self) -> &'static str {
        match std::str::from_utf8(self.bytes.split_at(self.len).0) {
            Ok(text) => text,
            Err(_) => panic!("statement text is not UTF-8"),
        }
    }
}

/// A `&'static str` statement text joined from constant parts at compile time — literals,
/// `concat!`s, and a dialect's clauses such as `<B::Db as Dialect>::ROW_LOCK` inside generic
/// store code: the inline `const` is evaluated once per database the code is instantiated for,
/// so no call formats or allocates its text.
macro_rules! const_sql {
    ($($part:expr),+ $(,)?) => {
        const { const { &$crate::store::sql::exec::SqlText::join(&[$($part),+]) }.as_str() }
    };
}
pub(crate) use const_sql;

/// Appends the placeholder `$n` to a statement built at run time (a multi-row `VALUES` list).
pub(crate) fn push_param(text: &mut String, n: usize) {
    text.push('$');
    // Writing to a `String` cannot fail.
    let _ = write!(text, "{n}");
}

/// One bound value: the column types both schemas share.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// A uuid (ids), or a typed NULL.
    Uuid(Option<Uuid>),
    /// A 64-bit integer (times in Unix ms, credits, counts), or a typed NULL.
    Int(Option<i64>),
    /// A text, or a typed NULL.
    Text(Option<&'a str>),
    /// A byte string (digests, hashes, stored bodies), or a typed NULL.
    Bytes(Option<&'a [u8]>),
    /// A boolean.
    Bool(bool),
}

impl From<Uuid> for Arg<'_> {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(Some(v))
    }
}
impl From<Option<Uuid>> for Arg<'_> {
    fn from(v: Option<Uuid>) -> Self {
        Arg::Uuid(v)
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<Timestamp> for Arg<'_> {
    fn from(v: Timestamp) -> Self {
        Arg::Int(Some(v.unix_ms()))
    }
}
impl From<Option<Timestamp>> for Arg<'_> {
    fn from(v: Option<Timestamp>) -> Self {
        Arg::Int(v.map(Timestamp::unix_ms))
    }
}
impl From<Credits> for Arg<'_> {
    fn from(v: Credits) -> Self {
        Arg::Int(Some(v.signed()))
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(Some(v))
    }
}
impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

/// A statement's text: a constant (written with `concat!` or [`const_sql!`]), or one assembled at run
/// time ([`built`]).
#[derive(Debug)]
enum Text {
    Static(&'static str),
    Built(String),
}

/// A statement and its values, in placeholder order (`$1`, `$2`, … on both databases).
#[derive(Debug)]
#[must_use = "a statement does nothing until it runs"]
pub(crate) struct Stmt<'a> {
    text: Text,
    args: Vec<Arg<'a>>,
}

/// A statement with constant text.
pub(crate) fn stmt<'a>(text: &'static str) -> Stmt<'a> {
    Stmt {
        text: Text::Static(text),
        args: Vec::new(),
    }
}

/// A statement whose text was assembled at run time: only a statement whose number of
/// placeholders varies (a multi-row `VALUES` list). Only constants and placeholders may go into
/// `text`: every value is bound.
pub(crate) fn built<'a>(text: String) -> Stmt<'a> {
    Stmt {
        text: Text::Built(text),
        args: Vec::new(),
    }
}

impl<'a> Stmt<'a> {
    /// Binds the next placeholder.
    pub(crate) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs it; the first row, if any.
    pub(crate) fn fetch_optional<'c, C: Exec>(
        self,
        conn: &'c mut C,
    ) -> impl Future<Output = Result<Option<C::Row>>> + Send + 'c
    where
        'a: 'c,
    {
        conn.fetch_optional(self)
    }

    /// Runs it; exactly one row (none is an error).
    pub(crate) fn fetch_one<'c, C: Exec>(
        self,
        conn: &'c mut C,
    ) -> impl Future<Output = Result<C::Row>> + Send + 'c
    where
        'a: 'c,
    {
        conn.fetch_one(self)
    }

    /// Runs it; every row.
    pub(crate) fn fetch_all<'c, C: Exec>(
        self,
        conn: &'c mut C,
    ) -> impl Future<Output = Result<Vec<C::Row>>> + Send + 'c
    where
        'a: 'c,
    {
        conn.fetch_all(self)
    }

    /// Runs it; the rows it changed.
    pub(crate) fn execute<'c, C: Exec>(
        self,
        conn: &'c mut C,
    ) -> impl Future<Output = Result<u64>> + Send + 'c
    where
        'a: 'c,
    {
        conn.execute(self)
    }
}

/// A database that binds every [`Arg`]: the encoding bounds, written once.
pub(crate) trait Binds: Dialect {
    /// `stmt` as a sqlx query with its values bound.
    fn query(stmt: Stmt<'_>) -> sqlx::query::Query<'static, Self, Self::Arguments>;
}

impl<DB> Binds for DB
where
    DB: Dialect,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    bool: for<'t> Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> &'t [u8]: Encode<'t, DB> + Type<DB>,
    Option<Uuid>: for<'t> Encode<'t, DB> + Type<DB>,
    Option<i64>: for<'t> Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t [u8]>: Encode<'t, DB> + Type<DB>,
{
    fn query(stmt: Stmt<'_>) -> sqlx::query::Query<'static, Self, Self::Arguments> {
        let mut q = match stmt.text {
            Text::Static(text) => sqlx::query::<DB>(text),
            Text::Built(text) => sqlx::query::<DB>(AssertSqlSafe(text)),
        };
        for arg in stmt.args {
            q = match arg {
                Arg::Uuid(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }
}

/// Where statements run: a connection (a pooled one, or a transaction's).
pub(crate) trait Exec: Send {
    /// A result row.
    type Row: Columns + Send + Sync;
    /// The first row, if any.
    fn fetch_optional<'c>(
        &'c mut self,
        stmt: Stmt<'c>,
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send + 'c;
    /// Exactly one row.
    fn fetch_one<'c>(
        &'c mut self,
        stmt: Stmt<'c>,
    ) -> impl Future<Output = Result<Self::Row>> + Send + 'c;
    /// Every row.
    fn fetch_all<'c>(
        &'c mut self,
        stmt: Stmt<'c>,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send + 'c;
    /// The rows changed.
    fn execute<'c>(&'c mut self, stmt: Stmt<'c>) -> impl Future<Output = Result<u64>> + Send + 'c;
}

impl<C> Exec for C
where
    C: sqlx::Connection,
    C::Database: Binds,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
    <C::Database as Database>::Row: Columns,
{
    type Row = <C::Database as Database>::Row;

    async fn fetch_optional<'c>(&'c mut self, stmt: Stmt<'c>) -> Result<Option<Self::Row>> {
        <C::Database as Binds>::query(stmt)
            .fetch_optional(self)
            .await
            .map_err(<C::Database as Dialect>::map_error)
    }

    async fn fetch_one<'c>(&'c mut self, stmt: Stmt<'c>) -> Result<Self::Row> {
        <C::Database as Binds>::query(stmt)
            .fetch_one(self)
            .await
            .map_err(<C::Database as Dialect>::map_error)
    }

    async fn fetch_all<'c>(&'c mut self, stmt: Stmt<'c>) -> Result<Vec<Self::Row>> {
        <C::Database as Binds>::query(stmt)
            .fetch_all(self)
            .await
            .map_err(<C::Database as Dialect>::map_error)
    }

    async fn execute<'c>(&'c mut self, stmt: Stmt<'c>) -> Result<u64> {
        let done = <C::Database as Binds>::query(stmt)
            .execute(self)
            .await
            .map_err(<C::Database as Dialect>::map_error)?;
        Ok(<C::Database as Dialect>::rows_affected(&done))
    }
}

/// A stored value that does not decode.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::store(StoreErrorKind::Corrupt, format!("{what}: {detail}"))
}

/// Typed access to one row by column name. A value that does not decode is a
/// `Store { kind: Corrupt }` error naming the column, never a panic.
pub(crate) trait Columns {
    /// A nullable uuid.
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>>;
    /// A nullable integer.
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    /// A nullable text.
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A nullable byte string.
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>>;

    /// A non-null uuid.
    fn uuid(&self, col: &str) -> Result<Uuid> {
        self.opt_uuid(col)?.ok_or_else(|| corrupt(col, "NULL"))
    }
    /// A non-null integer.
    fn int(&self, col: &str) -> Result<i64> {
        self.opt_int(col)?.ok_or_else(|| corrupt(col, "NULL"))
    }
    /// A non-null text.
    fn text(&self, col: &str) -> Result<String> {
        self.opt_text(col)?.ok_or_else(|| corrupt(col, "NULL"))
    }
    /// A non-null byte string.
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        self.opt_bytes(col)?.ok_or_else(|| corrupt(col, "NULL"))
    }
    /// A non-negative count (`COUNT(*)`, `seq`).
    fn count(&self, col: &str) -> Result<u64> {
        u64::try_from(self.int(col)?).map_err(|e| corrupt(col, e))
    }
    /// A timestamp.
    fn time(&self, col: &str) -> Result<Timestamp> {
        self.int(col).map(Timestamp::from_unix_ms)
    }
    /// A nullable timestamp.
    fn opt_time(&self, col: &str) -> Result<Option<Timestamp>> {
        Ok(self.opt_int(col)?.map(Timestamp::from_unix_ms))
    }
    /// A non-negative count of credits.
    fn credits(&self, col: &str) -> Result<Credits> {
        let n = self.count(col)?;
        Credits::new(n).map_err(|e| corrupt(col, e))
    }
}

impl<R> Columns for R
where
    R: sqlx::Row,
    for<'a> &'a str: ColumnIndex<R>,
    Uuid: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.try_get(col).map_err(|e| corrupt(col, e))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.try_get(col).map_err(|e| corrupt(col, e))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).map_err(|e| corrupt(col, e))
    }
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        self.try_get(col).map_err(|e| corrupt(col, e))
    }
}
