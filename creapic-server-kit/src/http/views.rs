//! Domain records → wire views: the one place that decides how a key, an organization, an
//! audit event or a job looks on the wire. Handlers call these; the client reads what they build.

use creapic_core::audit::AuditEvent;
use creapic_core::clock::Timestamp;
use creapic_core::job::{ItemStatus, Job, JobSummary};
use creapic_core::key::ApiKey;
use creapic_core::ledger::{DailyUsage, LedgerEntry};
use creapic_core::org::{Member, Organization};
use creapic_core::wire::{
    ApiKeyInfo, AuditEventWire, DailyUsageWire, ItemErrorWire, JobImage, JobStatusResponse,
    JobSummaryWire, LedgerEntryWire, MemberWire, OrganizationWire, ScopeWire,
};

/// A key's record as listed (never its secret or digest).
pub fn api_key(key: &ApiKey) -> ApiKeyInfo {
    ApiKeyInfo {
        id: key.id.to_string(),
        organization_id: key.org.to_string(),
        name: key.name.to_string(),
        prefix: key.prefix.to_string(),
        scopes: key.scopes.iter().map(ScopeWire::from).collect(),
        mode: key.mode.into(),
        created_at: key.created_at.to_rfc3339(),
        created_by: key.created_by.to_string(),
        last_used_at: key.last_used_at.map(|t| t.to_rfc3339()),
        expires_at: key.expires_at.map(|t| t.to_rfc3339()),
        deleted_at: key.deleted_at.map(|t| t.to_rfc3339()),
    }
}

/// An organization.
pub fn organization(org: &Organization) -> OrganizationWire {
    OrganizationWire {
        id: org.id.to_string(),
        name: org.name.to_string(),
        created_at: org.created_at.to_rfc3339(),
    }
}

/// A member of an organization.
pub fn member(m: &Member) -> MemberWire {
    MemberWire {
        user_id: m.user.id.to_string(),
        email: m.user.email.to_string(),
        role: m.role.into(),
        joined_at: m.joined_at.map(|t| t.to_rfc3339()),
    }
}

/// An audit event.
pub fn audit_event(e: &AuditEvent) -> AuditEventWire {
    AuditEventWire {
        id: e.id.to_string(),
        at: e.at.to_rfc3339(),
        action: e.action.as_str().to_owned(),
        actor: e.actor.to_text(),
        ip: e.ip.map(|ip| ip.to_string()),
        user_agent: e.user_agent.clone(),
        key_id: e.key_id.map(|k| k.to_string()),
        key_prefix: e.key_prefix.map(|p| p.to_string()),
        detail: e.detail.clone(),
    }
}

/// Credits charged for a job's succeeded items and returned for its failed or canceled ones.
pub fn job_credits(job: &Job) -> (u64, u64) {
    let unit = job.unit_cost.get();
    let used = job.succeeded() as u64 * unit;
    let refunded = job.failed() as u64 * unit;
    (used, refunded)
}

/// A bulk job's status. `url` turns an item's output (a media reference) into a URL.
pub fn job_status(job: &Job, url: &dyn Fn(&str) -> Option<String>) -> JobStatusResponse {
    let (credits_used, credits_refunded) = job_credits(job);
    JobStatusResponse {
        job_id: job.id.to_string(),
        status: job.status.into(),
        total_images: u32::try_from(job.items.len()).unwrap_or(u32::MAX),
        completed_images: u32::try_from(job.succeeded()).unwrap_or(u32::MAX),
        failed_images: u32::try_from(job.failed()).unwrap_or(u32::MAX),
        credits_used,
        credits_refunded,
        images: job
            .items
            .iter()
            .map(|item| JobImage {
                index: item.index,
                prompt: item.input.clone(),
                status: item.status.into(),
                url: match item.status {
                    ItemStatus::Succeeded => item.output.as_deref().and_then(url),
                    _ => None,
                },
                error: item.error.as_ref().map(|e| ItemErrorWire {
                    code: e.code.clone(),
                    message: e.message.clone(),
                }),
            })
            .collect(),
        created_at: job.created_at.to_rfc3339(),
        completed_at: job.finished_at.map(|t| t.to_rfc3339()),
    }
}

/// A UTC day as `YYYY-MM-DD`.
pub fn date(t: Timestamp) -> String {
    let mut text = t.to_rfc3339();
    text.truncate(10);
    text
}

/// A ledger entry.
pub fn ledger_entry(e: &LedgerEntry) -> LedgerEntryWire {
    LedgerEntryWire {
        id: e.id.to_string(),
        entry_type: e.kind.into(),
        amount: e.amount.get(),
        delta: e.delta,
        balance_after: e.balance_after.get(),
        job_id: e.job.map(|j| j.to_string()),
        // A hold no job pays through is a synchronous generation's: the generation's id is the
        // hold's (`GenerationId::of_hold`).
        generation_id: e
            .hold
            .filter(|_| e.job.is_none())
            .map(|h| creapic_core::id::GenerationId::of_hold(h).to_string()),
        hold_id: e.hold.map(|h| h.to_string()),
        created_at: e.created_at.to_rfc3339(),
    }
}

/// One day of usage.
pub fn daily_usage(u: &DailyUsage) -> DailyUsageWire {
    DailyUsageWire {
        date: date(u.day),
        spent: u.spent.get(),
        granted: u.granted.get(),
        released: u.released.get(),
    }
}

/// A job as a listing shows it.
pub fn job_summary(j: &JobSummary) -> JobSummaryWire {
    JobSummaryWire {
        job_id: j.id.to_string(),
        kind: j.kind.into(),
        status: j.status.into(),
        total_images: j.items,
        completed_images: j.succeeded,
        failed_images: j.failed,
        canceled_images: j.canceled,
        tokens_per_image: j.unit_cost.get(),
        created_at: j.created_at.to_rfc3339(),
        completed_at: j.finished_at.map(|t| t.to_rfc3339()),
    }
}

/// A generation record's view, and a fresh signed link to its image (none for a failed one).
pub fn generation(
    state: &crate::http::service::AppState,
    record: &creapic_core::generation::GenerationRecord,
) -> (creapic_core::wire::Generation, Option<String>) {
    use creapic_core::generation::GenerationOutcome;
    use creapic_core::wire::JobStatusWire;
    let prompt = serde_json::from_str(&record.prompt)
        .unwrap_or_else(|_| serde_json::Value::String(record.prompt.clone()));
    let status = match record.outcome {
        GenerationOutcome::Completed { .. } => JobStatusWire::Completed,
        GenerationOutcome::Failed { .. } => JobStatusWire::Failed,
    };
    let image_url = record
        .outcome
        .media()
        .and_then(|m| crate::generation::media::MediaKey::parse(m).ok())
        .and_then(|m| state.media_link(record.org, &m));
    let generation = creapic_core::wire::Generation {
        id: record.id.to_string(),
        status,
        prompt,
        aspect_ratio: record.aspect_ratio.into(),
        quality: record.quality.into(),
        tokens_used: record.outcome.tokens().get(),
        created_at: record.created_at.to_rfc3339(),
        error_code: record.outcome.error_code().map(str::to_owned),
    };
    (generation, image_url)
}
