//! Audit: the events that record who did what to keys, organizations and credits, from where.
//!
//! Events are appended in the same store transaction as the change they describe (a key insert
//! and its `key.created` event commit together), so the log cannot miss a change. They are read
//! back by organization and time range with a cursor, and purged after a retention period
//! (90 days by default, as the 001 document promises).

use std::net::IpAddr;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{AuditId, KeyId, OrgId, UserId};
use crate::key::KeyPrefix;
use crate::page::PageLimit;

/// How long audit events are kept unless configured otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Longest user agent kept, in bytes.
pub const USER_AGENT_MAX_BYTES: usize = 256;
/// Longest detail text, in bytes.
pub const DETAIL_MAX_BYTES: usize = 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditAction {
    /// A key was created.
    KeyCreated,
    /// A key was deleted.
    KeyDeleted,
    /// A key was used (recorded at most once per key per last-used flush interval).
    KeyUsed,
    /// An organization was created.
    OrgCreated,
    /// A member was added or their role changed.
    MemberChanged,
    /// A member was removed from an organization.
    MemberRemoved,
    /// Credits were granted.
    CreditsGranted,
}

impl AuditAction {
    /// Every action, in the order a filter lists them.
    pub const ALL: [AuditAction; 7] = [
        AuditAction::KeyCreated,
        AuditAction::KeyDeleted,
        AuditAction::KeyUsed,
        AuditAction::OrgCreated,
        AuditAction::MemberChanged,
        AuditAction::MemberRemoved,
        AuditAction::CreditsGranted,
    ];

    /// The wire name, e.g. `key.created`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::KeyCreated => "key.created",
            AuditAction::KeyDeleted => "key.deleted",
            AuditAction::KeyUsed => "key.used",
            AuditAction::OrgCreated => "org.created",
            AuditAction::MemberChanged => "member.changed",
            AuditAction::MemberRemoved => "member.removed",
            AuditAction::CreditsGranted => "credits.granted",
        }
    }

    /// Parses [`AuditAction::as_str`].
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "key.created" => AuditAction::KeyCreated,
            "key.deleted" => AuditAction::KeyDeleted,
            "key.used" => AuditAction::KeyUsed,
            "org.created" => AuditAction::OrgCreated,
            "member.changed" => AuditAction::MemberChanged,
            "member.removed" => AuditAction::MemberRemoved,
            "credits.granted" => AuditAction::CreditsGranted,
            _ => return Err(Error::invalid("audit action", "unknown")),
        })
    }
}

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A person, through the dashboard or an admin interface.
    User(UserId),
    /// An API key.
    Key(KeyId),
    /// The operator of the installation (the `creapic` admin CLI, a host's own code).
    Operator,
    /// Creapic itself (retention, background work).
    System,
}

impl Actor {
    /// `user:<id>`, `key:<id>`, `operator` or `system`.
    pub fn to_text(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Key(id) => format!("key:{id}"),
            Actor::Operator => "operator".to_owned(),
            Actor::System => "system".to_owned(),
        }
    }

    /// Parses [`Actor::to_text`].
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "operator" => Ok(Actor::Operator),
            "system" => Ok(Actor::System),
            _ => match text.split_once(':') {
                Some(("user", id)) => UserId::parse(id).map(Actor::User),
                Some(("key", id)) => KeyId::parse(id).map(Actor::Key),
                _ => Err(Error::invalid("actor", "unknown")),
            },
        }
    }
}

/// Where a request came from: recorded with key creation and deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The client's IP address.
    pub ip: Option<IpAddr>,
    /// The client's user agent, cut to [`USER_AGENT_MAX_BYTES`] with control characters removed.
    pub user_agent: Option<String>,
}

impl RequestContext {
    /// A context from raw request data, sanitized.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        RequestContext {
            ip,
            user_agent: user_agent.map(|ua| sanitize(ua, USER_AGENT_MAX_BYTES)),
        }
    }
}

/// Drops control characters and cuts to `max` bytes at a character boundary.
pub(crate) fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its id.
    pub id: AuditId,
    /// The organization it concerns.
    pub org: OrgId,
    /// When.
    pub at: Timestamp,
    /// What.
    pub action: AuditAction,
    /// Who.
    pub actor: Actor,
    /// From which address.
    pub ip: Option<IpAddr>,
    /// With which client.
    pub user_agent: Option<String>,
    /// The key concerned, if any.
    pub key_id: Option<KeyId>,
    /// Its display prefix, if any.
    pub key_prefix: Option<KeyPrefix>,
    /// Free text (e.g. `amount=100`), at most [`DETAIL_MAX_BYTES`].
    pub detail: Option<String>,
}

impl AuditEvent {
    /// A new event with the request's context.
    pub fn new(
        id: AuditId,
        org: OrgId,
        at: Timestamp,
        action: AuditAction,
        actor: Actor,
        ctx: &RequestContext,
    ) -> Self {
        AuditEvent {
            id,
            org,
            at,
            action,
            actor,
            ip: ctx.ip,
            user_agent: ctx.user_agent.clone(),
            key_id: None,
            key_prefix: None,
            detail: None,
        }
    }

    /// Sets the key concerned.
    pub fn with_key(mut self, id: KeyId, prefix: KeyPrefix) -> Self {
        self.key_id = Some(id);
        self.key_prefix = Some(prefix);
        self
    }

    /// Sets the detail text (sanitized and bounded).
    pub fn with_detail(mut self, detail: &str) -> Self {
        self.detail = Some(sanitize(detail, DETAIL_MAX_BYTES));
        self
    }
}

/// An event as stored, with its store-assigned position (the pagination cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the whole log, strictly increasing.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
}

/// A query of one organization's audit log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Whose log.
    pub org: OrgId,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// Only events of this action (all when `None`).
    pub action: Option<AuditAction>,
    /// Events after this cursor (the `seq` of the last event of the previous page).
    pub after: Option<u64>,
    /// Page size.
    pub limit: PageLimit,
}

impl AuditQuery {
    /// Everything of `org`, first page, default size.
    pub fn all(org: OrgId) -> Self {
        AuditQuery {
            org,
            since: None,
            until: None,
            action: None,
            after: None,
            limit: PageLimit::default(),
        }
    }

    /// Whether `event` falls in the query's organization, time range and action.
    pub fn matches(&self, seq: u64, event: &AuditEvent) -> bool {
        event.org == self.org
            && self.since.is_none_or(|s| event.at >= s)
            && self.until.is_none_or(|u| event.at < u)
            && self.action.is_none_or(|a| event.action == a)
            && self.after.is_none_or(|a| seq > a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()).ok(), Some(a));
        }
        for actor in [Actor::Operator, Actor::System] {
            assert_eq!(Actor::parse(&actor.to_text()).ok(), Some(actor));
        }
        assert!(Actor::parse("user:nope").is_err());
    }

    #[test]
    fn user_agents_are_sanitized_and_bounded() {
        let ctx = RequestContext::new(None, Some(&format!("curl/8\n\r{}", "é".repeat(500))));
        let ua = ctx.user_agent.unwrap_or_default();
        assert!(ua.starts_with("curl/8"));
        assert!(ua.len() <= USER_AGENT_MAX_BYTES);
        assert!(!ua.contains('\n'));
    }
}
