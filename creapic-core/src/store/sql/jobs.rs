//! Durable jobs on both SQL backends: `JobStore` for every [`SqlBackend`].
//!
//! A job and its items change only inside a write transaction that first reads the job with the
//! backend's row lock, so every report of one job, and the ledger entries it writes, serialize.
//! Runners claim with the backend's claim lock (PostgreSQL skips rows another claimer holds) and
//! a lease; a report from a worker whose lease was taken over is refused with `LeaseLost`.
//! What a report, a cancel, a completion or a hand-back changes is decided by the job itself
//! (`crate::job`: [`FinishItem`], [`Job::cancel`], [`Job::complete`], [`Job::hand_back`]); this
//! file loads, writes what was decided ([`write_transition`]) and commits.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreErrorKind};
use crate::id::{EntryId, JobId, OrgId};
use crate::job::{Enqueued, FinishItem, Job, JobItem, JobSummary, NewJob, Transition, WorkerId};
use crate::ledger::{Credits, Hold};
use crate::page::{Page, PageLimit};
use crate::store::JobStore;
use crate::store::sql::backend::{Conn, SqlBackend};
use crate::store::sql::exec::{Columns, Dialect, built, const_sql, corrupt, push_param, stmt};
use crate::store::sql::ledger::{apply_in, current_balance, find_hold};
use crate::store::sql::rows::{self, item_columns, job_columns};

/// `JobStore::list_jobs` on both SQL backends: `$1` the organization, `$2` the cursor (a job id
/// or NULL), `$3` the page size plus one. The page of jobs is chosen first, then only its items
/// are counted, by state, in one grouped scan.
pub(crate) const LIST_JOBS_SQL: &str = concat!(
    "WITH page AS (SELECT ",
    job_columns!(),
    " FROM jobs WHERE org = $1 AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3), \
         counts AS (SELECT job_id, CAST(COUNT(*) AS BIGINT) AS n_items, \
             CAST(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS n_succeeded, \
             CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS n_failed, \
             CAST(SUM(CASE WHEN status = 'canceled' THEN 1 ELSE 0 END) AS BIGINT) AS n_canceled \
             FROM job_items WHERE job_id IN (SELECT id FROM page) GROUP BY job_id) \
         SELECT page.*, COALESCE(counts.n_items, 0) AS n_items, \
             COALESCE(counts.n_succeeded, 0) AS n_succeeded, \
             COALESCE(counts.n_failed, 0) AS n_failed, \
             COALESCE(counts.n_canceled, 0) AS n_canceled \
         FROM page LEFT JOIN counts ON counts.job_id = page.id ORDER BY page.id"
);

/// A job's items in order: `$1` the job.
const ITEMS_OF_JOB: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM job_items WHERE job_id = $1 ORDER BY idx"
);

/// A job: `$1` the job ([`load_job`] appends the row lock).
/// Queued jobs, at most `$1` of them (the open-jobs partial index serves the scan).
const QUEUED_JOBS_COUNT: &str = "SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs \
     WHERE status IN ('queued', 'running') AND status = 'queued' LIMIT $1) AS queued";

const JOB_BY_ID: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");

/// The start of a job's items insert, before its `VALUES` rows.
const ITEMS_INSERT_HEAD: &str = "INSERT INTO job_items (job_id, idx, input, status) VALUES ";
/// Longest `VALUES` row of the items insert: `,($1, $n, $n, 'pending')` with 4-digit
/// placeholders.
const ITEM_ROW_BYTES_MAX: usize = 32;

/// A row of [`LIST_JOBS_SQL`].
pub(crate) fn job_summary(row: &impl Columns) -> Result<JobSummary> {
    let job = rows::job(row, Vec::new())?;
    let count =
        |col: &str| -> Result<u32> { u32::try_from(row.int(col)?).map_err(|e| corrupt(col, e)) };
    Ok(JobSummary {
        items: count("n_items")?,
        succeeded: count("n_succeeded")?,
        failed: count("n_failed")?,
        canceled: count("n_canceled")?,
        ..JobSummary::of(&job)
    })
}

async fn load_items<B: SqlBackend>(conn: &mut Conn<B>, id: JobId) -> Result<Vec<JobItem>> {
    let rows = stmt(ITEMS_OF_JOB)
        .bind(id.as_uuid())
        .fetch_all(conn)
        .await?;
    rows.iter().map(rows::item).collect()
}

/// A job with its items; with `lock`, its row is locked until the transaction ends
/// (`Dialect::ROW_LOCK`): every change to a job serializes on it.
async fn load_job<B: SqlBackend>(conn: &mut Conn<B>, id: JobId, lock: bool) -> Result<Option<Job>> {
    let text = if lock {
        const_sql!(JOB_BY_ID, " ", <B::Db as Dialect>::ROW_LOCK)
    } else {
        JOB_BY_ID
    };
    let row = stmt(text)
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let items = load_items::<B>(conn, id).await?;
    rows::job(&row, items).map(Some)
}

/// A job, row-locked; `NotFound` when there is none.
async fn locked_job<B: SqlBackend>(conn: &mut Conn<B>, id: JobId) -> Result<Job> {
    load_job::<B>(conn, id, true)
        .await?
        .ok_or(Error::NotFound { resource: "job" })
}

/// The job `worker` holds the lease of, row-locked.
async fn leased_job<B: SqlBackend>(
    conn: &mut Conn<B>,
    id: JobId,
    worker: &WorkerId,
) -> Result<Job> {
    let job = locked_job::<B>(conn, id).await?;
    job.check_lease(worker)?;
    Ok(job)
}

/// The job's hold as it is now (not locked: closing it locks it), for the job's decisions.
async fn hold_of<B: SqlBackend>(conn: &mut Conn<B>, job: &Job) -> Result<Option<Hold>> {
    match job.hold {
        Some(id) => find_hold::<B>(conn, job.org, id, false).await,
        None => Ok(None),
    }
}

/// Writes what [`Job::cancel`], [`Job::complete`] or [`Job::hand_back`] decided, in the caller's
/// transaction (the job row locked): the hold's closing release, the canceled items, the job's
/// state. The job as it is now.
async fn write_transition<B: SqlBackend>(conn: &mut Conn<B>, t: Transition) -> Result<Job> {
    if let Some(close) = &t.close {
        apply_in::<B>(conn, close).await?;
    }
    if !t.canceled.is_empty() {
        // Exactly `t.canceled`: the items still pending under the job's row lock.
        stmt(
            "UPDATE job_items SET status = 'canceled', finished_at = $2 \
             WHERE job_id = $1 AND status = 'pending'",
        )
        .bind(t.job.id.as_uuid())
        .bind(t.job.updated_at)
        .execute(&mut *conn)
        .await?;
    }
    set_job_state::<B>(conn, &t.job).await?;
    Ok(t.job)
}

/// Writes the job row's mutable state (status, lease, times, attempts).
async fn set_job_state<B: SqlBackend>(conn: &mut Conn<B>, job: &Job) -> Result<()> {
    stmt(
        "UPDATE jobs SET status = $2, lease_worker = $3, lease_expires_at = $4, finished_at = $5, \
         updated_at = $6, attempts = $7 WHERE id = $1",
    )
    .bind(job.id.as_uuid())
    .bind(job.status.as_str())
    .bind(job.lease.as_ref().map(|l| l.worker.as_str()))
    .bind(job.lease.as_ref().map(|l| l.expires_at))
    .bind(job.finished_at)
    .bind(job.updated_at)
    .bind(i64::from(job.attempts))
    .execute(conn)
    .await?;
    Ok(())
}

/// The id of the job enqueued under `new`'s idempotency key, if any.
async fn job_under_key<B: SqlBackend>(conn: &mut Conn<B>, new: &NewJob) -> Result<Option<JobId>> {
    let row = stmt("SELECT id FROM jobs WHERE org = $1 AND idempotency_key = $2")
        .bind(new.org.as_uuid())
        .bind(new.idempotency_key.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(|r| r.uuid("id").map(JobId::from_uuid)).transpose()
}

/// A repeat's answer: the first job, its hold, and the balance right after its reserve.
async fn enqueue_replay<B: SqlBackend>(
    conn: &mut Conn<B>,
    new: &NewJob,
    id: JobId,
) -> Result<Enqueued> {
    let job = load_job::<B>(conn, id, false)
        .await?
        .ok_or(Error::NotFound { resource: "job" })?;
    if !new.matches(&job) {
        return Err(Error::IdempotencyConflict);
    }
    let (hold, at_reserve) = match job.hold {
        Some(h) => {
            let hold = find_hold::<B>(conn, job.org, h, false).await?;
            let row =
                stmt("SELECT balance_after FROM ledger_entries WHERE id = $1 AND kind = 'hold'")
                    .bind(h.as_uuid())
                    .fetch_optional(&mut *conn)
                    .await?;
            (hold, row.map(|r| r.count("balance_after")).transpose()?)
        }
        None => (None, None),
    };
    let balance = match at_reserve {
        Some(b) => b,
        None => current_balance::<B>(conn, new.org).await?,
    };
    Ok(Enqueued {
        job,
        hold,
        balance: Credits::new(balance)?,
        replayed: true,
    })
}

/// One attempt at enqueueing `new`, in one write transaction: a repeat of its key answers with
/// the first job; otherwise the reserve, the job and its items are written together.
async fn enqueue_once<B: SqlBackend>(store: &B, new: &NewJob) -> Result<Enqueued> {
    let mut tx = store.write().await?;
    if let Some(id) = job_under_key::<B>(&mut tx, new).await? {
        return enqueue_replay::<B>(&mut tx, new, id).await;
    }
    new.validate()?;
    let exists = stmt(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE id = $1) AS jobs, \
         (SELECT COUNT(*) FROM orgs WHERE id = $2) AS orgs",
    )
    .bind(new.id.as_uuid())
    .bind(new.org.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    if exists.count("jobs")? != 0 {
        return Err(Error::store(StoreErrorKind::Conflict, "job already exists"));
    }
    if exists.count("orgs")? == 0 {
        return Err(Error::NotFound {
            resource: "organization",
        });
    }
    let (hold, balance) = match new.reserve_request()? {
        Some(reserve) => {
            let receipt = apply_in::<B>(&mut tx, &reserve).await?;
            (receipt.hold, receipt.entry.balance_after)
        }
        None => (
            None,
            Credits::new(current_balance::<B>(&mut tx, new.org).await?)?,
        ),
    };
    let job = new.to_job(hold.as_ref().map(|h| h.id));
    stmt(
        "INSERT INTO jobs (id, org, key_id, kind, mode, status, unit_cost, hold_id, \
         idempotency_key, created_at, updated_at, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, 0)",
    )
    .bind(job.id.as_uuid())
    .bind(job.org.as_uuid())
    .bind(job.key.map(|k| k.as_uuid()))
    .bind(job.kind.as_str())
    .bind(job.mode.as_str())
    .bind(job.status.as_str())
    .bind(job.unit_cost)
    .bind(job.hold.map(|h| h.as_uuid()))
    .bind(job.idempotency_key.as_str())
    .bind(job.created_at)
    .execute(&mut *tx)
    .await?;
    // One multi-row insert: `validate` bounds the items (`JOB_ITEMS_MAX`), so the statement's
    // parameters stay far below either database's limit.
    let mut text =
        String::with_capacity(ITEMS_INSERT_HEAD.len() + job.items.len() * ITEM_ROW_BYTES_MAX);
    text.push_str(ITEMS_INSERT_HEAD);
    for i in 0..job.items.len() {
        text.push_str(if i == 0 { "($1, " } else { ",($1, " });
        push_param(&mut text, 2 * i + 2);
        text.push_str(", ");
        push_param(&mut text, 2 * i + 3);
        text.push_str(", 'pending')");
    }
    let mut insert = built(text).bind(job.id.as_uuid());
    for item in &job.items {
        insert = insert.bind(i64::from(item.index)).bind(item.input.as_str());
    }
    insert.execute(&mut *tx).await?;
    B::commit(tx).await?;
    Ok(Enqueued {
        job,
        hold,
        balance,
        replayed: false,
    })
}

#[async_trait]
impl<B: SqlBackend> JobStore for B {
    async fn enqueue(&self, new: &NewJob) -> Result<Enqueued> {
        match enqueue_once(self, new).await {
            // A concurrent enqueue under the same key won the unique constraint (PostgreSQL;
            // SQLite's one writer never gets here): this one wrote nothing and answers as a
            // repeat.
            Err(Error::Store {
                kind: StoreErrorKind::Conflict,
                message,
            }) => {
                let mut conn = self.read().await?;
                match job_under_key::<B>(&mut conn, new).await? {
                    Some(id) => enqueue_replay::<B>(&mut conn, new, id).await,
                    None => Err(Error::Store {
                        kind: StoreErrorKind::Conflict,
                        message,
                    }),
                }
            }
            other => other,
        }
    }

    async fn job(&self, org: OrgId, id: JobId) -> Result<Option<Job>> {
        let mut conn = self.read().await?;
        Ok(load_job::<B>(&mut conn, id, false)
            .await?
            .filter(|j| j.org == org))
    }

    async fn list_jobs(
        &self,
        org: OrgId,
        after: Option<JobId>,
        limit: PageLimit,
    ) -> Result<Page<JobSummary, JobId>> {
        let mut conn = self.read().await?;
        let rows = stmt(LIST_JOBS_SQL)
            .bind(org.as_uuid())
            .bind(after.map(|j| j.as_uuid()))
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let jobs = rows.iter().map(job_summary).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(jobs, limit, |j| j.id))
    }

    async fn count_queued_jobs(&self, max: PageLimit) -> Result<u64> {
        let mut conn = self.read().await?;
        stmt(QUEUED_JOBS_COUNT)
            .bind(i64::from(max.get()))
            .fetch_one(&mut *conn)
            .await?
            .count("n")
    }

    async fn claim_job(
        &self,
        worker: &WorkerId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Job>> {
        let mut tx = self.write().await?;
        let claimed = stmt(const_sql!(
            "UPDATE jobs SET status = 'running', lease_worker = $1, lease_expires_at = $3, \
             attempts = attempts + 1, updated_at = $2 \
             WHERE id = (SELECT j.id FROM jobs j WHERE j.status IN ('queued', 'running') \
                 AND (j.status = 'queued' OR j.lease_expires_at IS NULL \
                      OR j.lease_expires_at <= $2) \
                 ORDER BY (SELECT count(*) FROM jobs r WHERE r.org = j.org \
                           AND r.status = 'running' AND r.lease_expires_at > $2), j.id \
                 LIMIT 1 ",
            <B::Db as Dialect>::CLAIM_LOCK,
            ") RETURNING id"
        ))
        .bind(worker.as_str())
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = claimed else { return Ok(None) };
        let job = load_job::<B>(&mut tx, JobId::from_uuid(row.uuid("id")?), false).await?;
        B::commit(tx).await?;
        Ok(job)
    }

    async fn renew_lease(
        &self,
        id: JobId,
        worker: &WorkerId,
        lease_until: Timestamp,
    ) -> Result<Job> {
        let mut tx = self.write().await?;
        let mut job = leased_job::<B>(&mut tx, id, worker).await?;
        if let Some(lease) = job.lease.as_mut() {
            lease.expires_at = lease_until;
        }
        set_job_state::<B>(&mut tx, &job).await?;
        B::commit(tx).await?;
        Ok(job)
    }

    async fn release_lease(&self, id: JobId, worker: &WorkerId, at: Timestamp) -> Result<Job> {
        let mut tx = self.write().await?;
        let transition = locked_job::<B>(&mut tx, id).await?.hand_back(worker, at)?;
        let job = write_transition::<B>(&mut tx, transition).await?;
        B::commit(tx).await?;
        Ok(job)
    }

    async fn finish_item(&self, report: &FinishItem) -> Result<Job> {
        let mut tx = self.write().await?;
        let mut job = leased_job::<B>(&mut tx, report.job, &report.worker).await?;
        let Some(index) = report.pending_index(&job)? else {
            return Ok(job);
        };
        if let Some(request) = report.ledger_request(&job) {
            apply_in::<B>(&mut tx, &request).await?;
        }
        report.apply_to(&mut job, index);
        let item = &job.items[index];
        stmt(
            "UPDATE job_items SET status = $3, output = $4, error_code = $5, error_message = $6, \
             finished_at = $7 WHERE job_id = $1 AND idx = $2 AND status = 'pending'",
        )
        .bind(job.id.as_uuid())
        .bind(i64::from(report.index))
        .bind(item.status.as_str())
        .bind(item.output.as_deref())
        .bind(item.error.as_ref().map(|e| e.code.as_str()))
        .bind(item.error.as_ref().map(|e| e.message.as_str()))
        .bind(report.at)
        .execute(&mut *tx)
        .await?;
        set_job_state::<B>(&mut tx, &job).await?;
        B::commit(tx).await?;
        Ok(job)
    }

    async fn complete_job(
        &self,
        id: JobId,
        worker: &WorkerId,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Job> {
        let mut tx = self.write().await?;
        let job = locked_job::<B>(&mut tx, id).await?;
        let hold = hold_of::<B>(&mut tx, &job).await?;
        let transition = job.complete(worker, hold.as_ref(), entry_id, at)?;
        let job = write_transition::<B>(&mut tx, transition).await?;
        B::commit(tx).await?;
        Ok(job)
    }

    async fn cancel_job(
        &self,
        org: OrgId,
        id: JobId,
        entry_id: EntryId,
        at: Timestamp,
    ) -> Result<Job> {
        let mut tx = self.write().await?;
        let job = load_job::<B>(&mut tx, id, true)
            .await?
            .filter(|j| j.org == org)
            .ok_or(Error::NotFound { resource: "job" })?;
        let hold = hold_of::<B>(&mut tx, &job).await?;
        let Some(transition) = job.cancel(hold.as_ref(), entry_id, at)? else {
            return Ok(job);
        };
        let job = write_transition::<B>(&mut tx, transition).await?;
        B::commit(tx).await?;
        Ok(job)
    }
}
