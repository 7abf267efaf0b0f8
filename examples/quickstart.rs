//! Quickstart: the creapic service logic end to end, in one process, with no setup.
//!
//! Creates an organization and its owner, grants credits, creates an API key (printing its
//! plaintext once, as a dashboard would), verifies the key the way every request is verified,
//! checks its scope, spends credits (a debit, then a held bulk job captured per image), shows the
//! idempotent retry that is not charged twice, deletes the key, and prints the audit log.
//!
//! Run: `cargo run --example quickstart`
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use creapic_core::audit::{Actor, AuditQuery, RequestContext};
use creapic_core::job::{ItemOutcome, JobKind, WorkerId};
use creapic_core::key::KeyMode;
use creapic_core::ledger::Credits;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::memory::MemoryStore;
use creapic_core::{Creapic, JobSpec, KeySpec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), creapic_core::Error> {
    let core = Creapic::new(Arc::new(MemoryStore::new()));
    let ctx = RequestContext::new(Some([127, 0, 0, 1].into()), Some("quickstart/0.1"));

    let owner = core.ensure_user("owner@example.com").await?;
    let org = core
        .create_org("Acme Media", owner.id, Actor::Operator, &ctx)
        .await?;
    println!("organization  {} ({})", org.name, org.id);

    core.grant(Actor::Operator, org.id, 10, "welcome-credits", &ctx)
        .await?;
    println!("credits       {} granted", core.balance(org.id).await?);

    let spec = KeySpec {
        name: "Production".into(),
        scopes: ScopeSet::new([Scope::ImageGeneration, Scope::SceneRender])?,
        mode: KeyMode::Live,
        expires_at: None,
    };
    let created = core
        .create_key(Actor::User(owner.id), org.id, spec, &ctx)
        .await?;
    println!(
        "api key       {}  (shown once; stored only as SHA-256)",
        created.secret.expose()
    );
    println!("key prefix    {}", created.key.prefix);

    let header = format!("Bearer {}", created.secret.expose());
    let who = core.authenticate(Some(header.as_bytes()), None).await?;
    who.require(Scope::ImageGeneration)?;
    println!(
        "verified      key {} of org {} (scopes {})",
        who.prefix, who.org, who.scopes
    );
    match who.require(Scope::OrganizationWrite) {
        Err(e) => println!("refused       {e} [{}]", e.code()),
        Ok(()) => println!("unexpected    ORGANIZATION_WRITE granted"),
    }

    let debit = core.debit(org.id, 2, "generate-1").await?;
    let retry = core.debit(org.id, 2, "generate-1").await?;
    println!(
        "debit         2 credits, balance {} (retry replayed: {}, balance still {})",
        debit.balance(),
        retry.replayed,
        core.balance(org.id).await?
    );

    let job = JobSpec {
        kind: JobKind::Bulk,
        inputs: vec![
            "A beautiful sunset over the ocean".into(),
            "A futuristic cityscape".into(),
        ],
        unit_cost: Credits::new(1)?,
    };
    let queued = core.submit_job(&who, job, "bulk-1").await?;
    println!(
        "bulk job      {} queued: {} images, {} credits held, balance {}",
        queued.job.id,
        queued.job.items.len(),
        queued.hold.as_ref().map_or(0, |h| h.amount.get()),
        queued.balance
    );
    let worker = WorkerId::new("quickstart-worker")?;
    if let Some(job) = core.claim_job(&worker, Duration::from_secs(30)).await? {
        for item in &job.items {
            let output = format!("media/{}/{}.png", job.id, item.index);
            core.finish_item(
                job.id,
                &worker,
                item.index,
                ItemOutcome::Succeeded { output },
            )
            .await?;
        }
        let done = core.complete_job(job.id, &worker).await?;
        println!(
            "bulk job      {}: {} of {} images, balance {}",
            done.status.as_str(),
            done.succeeded(),
            done.items.len(),
            core.balance(org.id).await?
        );
    }

    core.flush_usage(true).await?;
    core.delete_key(Actor::User(owner.id), org.id, created.key.id, &ctx)
        .await?;
    match core.authenticate(Some(header.as_bytes()), None).await {
        Err(e) => println!("after delete  {e} [{}]", e.code()),
        Ok(_) => println!("unexpected    deleted key accepted"),
    }

    println!("audit log:");
    let log = core
        .audit(Actor::User(owner.id), &AuditQuery::all(org.id))
        .await?;
    for record in log.items {
        let e = record.event;
        let ip = e.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let prefix = e.key_prefix.map(|p| p.to_string()).unwrap_or_default();
        println!(
            "  {}  {:<16} {:<14} {}",
            e.at,
            e.action.as_str(),
            prefix,
            ip
        );
    }
    Ok(())
}
