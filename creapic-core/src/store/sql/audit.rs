//! The audit log on both SQL backends: `AuditStore` for every [`SqlBackend`], and the append
//! every audited change ends its transaction with.
//!
//! Appends are linked into the hash chain ([`crate::audit_chain`]): the one-row head
//! `audit_chain` is read with the backend's row lock and advanced inside the caller's write
//! transaction, which serializes every append, so `seq` (assigned from the head) is commit order
//! without gaps. Every caller appends as the last write of its transaction, so the head lock is
//! always taken last and held only until commit: no lock is awaited while it is held.

use async_trait::async_trait;

use crate::audit::{AuditAction, AuditEvent, AuditQuery, AuditRecord};
use crate::audit_chain::{self, ChainHead, ChainRow};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::page::{Page, PageLimit};
use crate::store::AuditStore;
use crate::store::sql::backend::{Conn, SqlBackend};
use crate::store::sql::exec::{Columns, Dialect, built, const_sql, push_param, stmt};
use crate::store::sql::rows::{
    self, AuditParams, PURGE_BATCH, PURGE_BATCHES_MAX, audit_columns, chain_columns, head_columns,
    seq_param,
};

/// Most audit rows in one multi-row insert (13 parameters each: far below either database's
/// limit on parameters).
const AUDIT_ROWS_PER_INSERT: usize = 200;

/// The chain's head ([`chain_head`] appends the row lock).
const HEAD: &str = concat!("SELECT ", head_columns!(), " FROM audit_chain WHERE id = 1");
/// The start of an audit insert, before its `VALUES` rows.
const AUDIT_INSERT_HEAD: &str = "INSERT INTO audit_events (seq, id, org, at, action, actor, ip, \
     user_agent, key_id, key_prefix, detail, prev_hash, hash) VALUES ";
/// Longest `VALUES` row of an audit insert: `,(` and 13 placeholders of at most 4 digits.
const AUDIT_ROW_BYTES_MAX: usize = 3 + 13 * 6;
/// `AuditStore::audit`: `$1` the organization, `$2` the cursor (a `seq`, 0 for the start),
/// `$3`..`$4` the optional time range, `$5` the page size plus one.
const AUDIT_OF_ORG: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_events WHERE org = $1 AND seq > $2 \
     AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4) \
     AND ($5 IS NULL OR action = $5) ORDER BY seq LIMIT $6"
);
/// Copies event `$1` into the one-row `audit_anchor` table.
const ANCHOR_COPY: &str = concat!(
    "INSERT INTO audit_anchor (slot, ",
    chain_columns!(),
    ") SELECT 1, ",
    chain_columns!(),
    " FROM audit_events WHERE seq = $1"
);
/// The anchor event, if retention has moved the anchor.
const ANCHOR: &str = concat!(
    "SELECT ",
    chain_columns!(),
    " FROM audit_anchor WHERE slot = 1"
);
/// `AuditStore::audit_chain`: `$1` the cursor (a `seq`), `$2` the limit.
const CHAIN_AFTER: &str = concat!(
    "SELECT ",
    chain_columns!(),
    " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
);

/// The chain's head; with `lock`, locked until the transaction ends (`Dialect::ROW_LOCK`).
async fn chain_head<B: SqlBackend>(conn: &mut Conn<B>, lock: bool) -> Result<ChainHead> {
    let text = if lock {
        const_sql!(HEAD, " ", <B::Db as Dialect>::ROW_LOCK)
    } else {
        HEAD
    };
    let row = stmt(text).fetch_one(conn).await?;
    rows::chain_head(&row)
}

/// Appends one event in the caller's write transaction.
pub(crate) async fn insert_audit<B: SqlBackend>(
    conn: &mut Conn<B>,
    event: &AuditEvent,
) -> Result<()> {
    insert_audits::<B>(conn, std::slice::from_ref(event)).await
}

/// Appends events, linked into the chain, with one multi-row insert per
/// [`AUDIT_ROWS_PER_INSERT`] events, in the caller's write transaction.
pub(crate) async fn insert_audits<B: SqlBackend>(
    conn: &mut Conn<B>,
    events: &[AuditEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut head = chain_head::<B>(&mut *conn, true).await?;
    let links = audit_chain::link(&mut head, events);
    for (chunk, links) in events
        .chunks(AUDIT_ROWS_PER_INSERT)
        .zip(links.chunks(AUDIT_ROWS_PER_INSERT))
    {
        let rows: Vec<AuditParams> = chunk.iter().map(AuditParams::of).collect();
        let mut text =
            String::with_capacity(AUDIT_INSERT_HEAD.len() + chunk.len() * AUDIT_ROW_BYTES_MAX);
        text.push_str(AUDIT_INSERT_HEAD);
        for i in 0..chunk.len() {
            text.push_str(if i == 0 { "(" } else { ",(" });
            for c in 0..13 {
                if c > 0 {
                    text.push(',');
                }
                push_param(&mut text, 13 * i + c + 1);
            }
            text.push(')');
        }
        let mut insert = built(text);
        for (p, l) in rows.iter().zip(links) {
            insert = insert
                .bind(seq_param(l.seq)?)
                .bind(p.id)
                .bind(p.org)
                .bind(p.at)
                .bind(p.action)
                .bind(p.actor.as_str())
                .bind(p.ip.as_deref())
                .bind(p.user_agent.as_deref())
                .bind(p.key_id)
                .bind(p.key_prefix.as_deref())
                .bind(p.detail.as_deref())
                .bind(l.prev_hash.as_bytes().as_slice())
                .bind(l.hash.as_bytes().as_slice());
        }
        insert.execute(&mut *conn).await?;
    }
    stmt("UPDATE audit_chain SET last_seq = $1, last_hash = $2 WHERE id = 1")
        .bind(seq_param(head.last_seq)?)
        .bind(head.last_hash.as_bytes().as_slice())
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl<B: SqlBackend> AuditStore for B {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        insert_audits::<B>(&mut tx, events).await?;
        B::commit(tx).await
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditRecord, u64>> {
        let after = i64::try_from(q.after.unwrap_or(0)).unwrap_or(i64::MAX);
        let mut conn = self.read().await?;
        let rows = stmt(AUDIT_OF_ORG)
            .bind(q.org.as_uuid())
            .bind(after)
            .bind(q.since)
            .bind(q.until)
            .bind(q.action.map(AuditAction::as_str))
            .bind(i64::from(q.limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows.iter().map(rows::audit).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, q.limit, |r| r.seq))
    }

    async fn purge_audit_before(&self, cutoff: Timestamp) -> Result<u64> {
        let mut total = 0;
        for _ in 0..PURGE_BATCHES_MAX {
            let mut tx = self.write().await?;
            // The head is locked first: a purge and an append never interleave.
            let head = chain_head::<B>(&mut tx, true).await?;
            let oldest = stmt("SELECT seq, at, hash FROM audit_events ORDER BY seq LIMIT $1")
                .bind(PURGE_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            let oldest = oldest
                .iter()
                .map(|r| Ok((r.count("seq")?, r.int("at")?, r.opt_bytes("hash")?)))
                .collect::<Result<Vec<_>>>()?;
            let upto = audit_chain::purge_prefix(
                oldest
                    .iter()
                    .map(|(seq, at, hash)| (*seq, *at < cutoff.unix_ms(), hash.as_deref())),
            );
            let Some((seq, hash)) = upto else {
                break;
            };
            // Rows written before the chain existed carry no hash and leave the anchor alone.
            // Otherwise the last deleted row becomes the anchor event, copied before it goes,
            // so verification can prove the anchor and read its time.
            if let Some(hash) = hash.filter(|_| seq > head.anchor_seq) {
                stmt("DELETE FROM audit_anchor").execute(&mut *tx).await?;
                stmt(ANCHOR_COPY)
                    .bind(seq_param(seq)?)
                    .execute(&mut *tx)
                    .await?;
                stmt("UPDATE audit_chain SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1")
                    .bind(seq_param(seq)?)
                    .bind(hash.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
            }
            let done = stmt("DELETE FROM audit_events WHERE seq <= $1")
                .bind(seq_param(seq)?)
                .execute(&mut *tx)
                .await?;
            B::commit(tx).await?;
            total += done;
            if oldest.len() < PURGE_BATCH.unsigned_abs() as usize || done < oldest.len() as u64 {
                break;
            }
        }
        Ok(total)
    }

    async fn audit_chain_head(&self) -> Result<ChainHead> {
        let mut conn = self.read().await?;
        chain_head::<B>(&mut conn, false).await
    }

    async fn audit_chain_anchor(&self) -> Result<Option<ChainRow>> {
        let mut conn = self.read().await?;
        let row = stmt(ANCHOR).fetch_optional(&mut *conn).await?;
        row.as_ref().map(rows::chain_row).transpose()
    }

    async fn audit_chain(&self, after: u64, limit: PageLimit) -> Result<Vec<ChainRow>> {
        let mut conn = self.read().await?;
        let rows = stmt(CHAIN_AFTER)
            .bind(seq_param(after)?)
            .bind(i64::from(limit.get()))
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(rows::chain_row).collect()
    }
}
