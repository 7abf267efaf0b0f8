//! The audit log page (`GET /console/audit?org=…&action=…&from=…&to=…&after=…`, owners and
//! admins) and its CSV export (`GET /console/audit.csv?…`, the same filter).
//!
//! The filter is an action (one of [`AuditAction::ALL`], or all) and a range of whole UTC days,
//! `from` and `to` both included (`YYYY-MM-DD`, as `<input type=date>` sends them); a malformed
//! date or an unknown action is a 400 page with a sentence, never a silently ignored filter.
//! The core decides who may read the log (`Creapic::audit`: members `Forbidden`, outsiders
//! `NotFound`), exactly as for `/api/audit`. The table names people by their e-mail (the
//! organization's first members; others by their id).
//!
//! The export is the API's CSV ([`crate::http::handlers::audit::to_csv`], one encoder), sent as
//! an attachment with the page's session: at most [`EXPORT_ROWS_MAX`] events, the oldest the
//! filter matches (the page says so; a narrower date range exports the rest).

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use creapic_core::audit::{Actor, AuditAction, AuditQuery, AuditRecord};
use creapic_core::clock::Timestamp;
use creapic_core::id::UserId;
use creapic_core::page::PageLimit;
use http::StatusCode;
use serde::Deserialize;

use crate::http::console::frame::{self, Frame, OrgFrame, Section};
use crate::http::console::page::{self, When};
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::handlers::audit::to_csv;
use crate::http::service::AppState;
use crate::http::views;

/// Events on one page of the table (a "Next page" link follows).
pub const AUDIT_ROWS_PER_PAGE: u32 = 50;
/// Most events in one CSV export: the oldest the filter matches.
pub const EXPORT_ROWS_MAX: usize = 10_000;

/// Query of `GET /console/audit` and `GET /console/audit.csv`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditPageQuery {
    /// The organization (default: the person's first).
    pub org: Option<String>,
    /// An action (`key.created`, …); empty or absent for all.
    pub action: Option<String>,
    /// The first day, `YYYY-MM-DD` (UTC); empty or absent for no bound.
    pub from: Option<String>,
    /// The last day, included.
    pub to: Option<String>,
    /// The `seq` of the last event of the previous page.
    pub after: Option<String>,
}

/// A checked filter.
#[derive(Debug, Default)]
struct Filter {
    action: Option<AuditAction>,
    from: Option<(String, Timestamp)>,
    to: Option<(String, Timestamp)>,
    after: Option<u64>,
}

impl Filter {
    /// The query's filter, or the 400 that says which part is wrong.
    fn of(query: &AuditPageQuery) -> Result<Filter, Error> {
        let action = given(&query.action)
            .filter(|a| *a != "all")
            .map(|a| {
                AuditAction::parse(a).map_err(|_| Error::InvalidParameter {
                    name: "action",
                    message: "is not an action of the audit log".into(),
                })
            })
            .transpose()?;
        let from = given(&query.from)
            .map(|d| day(d, "from date"))
            .transpose()?;
        let to = given(&query.to).map(|d| day(d, "to date")).transpose()?;
        let after = given(&query.after)
            .map(|a| {
                a.parse::<u64>().map_err(|_| Error::InvalidParameter {
                    name: "page position",
                    message: "is not one this page made".into(),
                })
            })
            .transpose()?;
        Ok(Filter {
            action,
            from,
            to,
            after,
        })
    }

    /// The core's query for `org`, `limit` events.
    fn query(&self, org: creapic_core::id::OrgId, limit: PageLimit) -> AuditQuery {
        AuditQuery {
            org,
            since: self.from.as_ref().map(|(_, t)| *t),
            // `to` is included: events before the next day's midnight.
            until: self
                .to
                .as_ref()
                .map(|(_, t)| t.plus(Duration::from_secs(24 * 60 * 60))),
            action: self.action,
            after: self.after,
            limit,
        }
    }

    /// `org=…&action=…&from=…&to=…` (what is set), for links that keep the filter.
    fn link_query(&self, org: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("org", org);
        if let Some(a) = self.action {
            q.append_pair("action", a.as_str());
        }
        if let Some((d, _)) = &self.from {
            q.append_pair("from", d);
        }
        if let Some((d, _)) = &self.to {
            q.append_pair("to", d);
        }
        q.finish()
    }
}

/// A query field's text, absent when empty.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// `text` as the midnight (UTC) starting that day; only `YYYY-MM-DD`.
fn day(text: &str, name: &'static str) -> Result<(String, Timestamp), Error> {
    let bad = || Error::InvalidParameter {
        name,
        message: "must be a day written YYYY-MM-DD".into(),
    };
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped {
        return Err(bad());
    }
    let at = Timestamp::parse(text).map_err(|_| bad())?;
    Ok((text.to_owned(), at))
}

struct ActionChoice {
    name: &'static str,
    selected: bool,
}

struct EventRow {
    when: When,
    action: &'static str,
    actor: String,
    ip: String,
    user_agent: String,
    key_prefix: String,
    detail: String,
}

/// The audit page.
#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    frame: Frame,
    org: OrgFrame,
    actions: Vec<ActionChoice>,
    all_selected: bool,
    from_value: String,
    to_value: String,
    events: Vec<EventRow>,
    next_page: Option<String>,
    first_page: Option<String>,
    export: String,
    export_max: usize,
    filtered: bool,
}

/// `GET /console/audit?…`: the filter form, one page of events and the export link.
pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<AuditPageQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let filter = match Filter::of(&query) {
        Ok(filter) => filter,
        Err(e) => return page::error(&viewer.base, &e),
    };
    let org = match frame::load_org(&state, &viewer, query.org.as_deref(), Section::Audit).await {
        Ok(org) => org,
        Err(answer) => return answer,
    };
    let read = async {
        let limit = PageLimit::new(AUDIT_ROWS_PER_PAGE)?;
        let events = state
            .core()
            .audit(Actor::User(viewer.user), &filter.query(org.org, limit))
            .await?;
        // People are shown by e-mail: the organization's first members (those further on,
        // and people who left, by their id).
        let members = state
            .core()
            .members(
                Actor::User(viewer.user),
                org.org,
                None,
                PageLimit::new(super::members::MEMBERS_SHOWN_MAX)?,
            )
            .await?;
        let emails: HashMap<UserId, String> = members
            .items
            .into_iter()
            .map(|m| (m.user.id, m.user.email.as_str().to_owned()))
            .collect();
        Ok::<_, creapic_core::Error>((events, emails))
    }
    .await;
    let (events, emails) = match read {
        Ok(found) => found,
        Err(e) => return page::error(&viewer.base, &Error::Core(e)),
    };
    let base = viewer.base.as_str();
    let keep = filter.link_query(&org.id);
    let next_page = events
        .next
        .map(|seq| format!("{base}/audit?{keep}&after={seq}"));
    let first_page = filter.after.map(|_| format!("{base}/audit?{keep}"));
    page::render(
        StatusCode::OK,
        &AuditPage {
            frame: Frame::of(&viewer),
            actions: AuditAction::ALL
                .into_iter()
                .map(|a| ActionChoice {
                    name: a.as_str(),
                    selected: filter.action == Some(a),
                })
                .collect(),
            all_selected: filter.action.is_none(),
            from_value: filter
                .from
                .as_ref()
                .map(|(d, _)| d.clone())
                .unwrap_or_default(),
            to_value: filter
                .to
                .as_ref()
                .map(|(d, _)| d.clone())
                .unwrap_or_default(),
            events: events.items.iter().map(|r| row(r, &emails)).collect(),
            next_page,
            first_page,
            export: format!("{base}/audit.csv?{keep}"),
            export_max: EXPORT_ROWS_MAX,
            filtered: filter.action.is_some() || filter.from.is_some() || filter.to.is_some(),
            org,
        },
    )
}

/// `GET /console/audit.csv?…`: the filtered log as CSV, at most [`EXPORT_ROWS_MAX`] events.
pub async fn export(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<AuditPageQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let read = async {
        let mut filter = Filter::of(&query)?;
        // The export is the whole filter from its start, whatever page the link was on.
        filter.after = None;
        let org = frame::org_param(query.org.as_deref())?;
        let mut q = filter.query(org, PageLimit::max());
        let mut events = Vec::new();
        while events.len() < EXPORT_ROWS_MAX {
            let page = state
                .core()
                .audit(Actor::User(viewer.user), &q)
                .await
                .map_err(Error::Core)?;
            events.extend(page.items.iter().map(|r| views::audit_event(&r.event)));
            match page.next {
                Some(next) => q.after = Some(next),
                None => break,
            }
        }
        events.truncate(EXPORT_ROWS_MAX);
        Ok::<_, Error>((org, events))
    }
    .await;
    match read {
        Ok((org, events)) => page::download(
            &format!("audit-{org}.csv"),
            "text/csv; charset=utf-8",
            to_csv(&events),
        ),
        Err(e) => page::error(&viewer.base, &e),
    }
}

fn row(r: &AuditRecord, emails: &HashMap<UserId, String>) -> EventRow {
    let e = &r.event;
    let actor = match e.actor {
        Actor::User(id) => emails.get(&id).cloned(),
        _ => None,
    };
    EventRow {
        when: When::of(e.at),
        action: e.action.as_str(),
        actor: actor.unwrap_or_else(|| e.actor.to_text()),
        ip: e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_agent: e.user_agent.clone().unwrap_or_default(),
        key_prefix: e.key_prefix.map(|p| p.to_string()).unwrap_or_default(),
        detail: e.detail.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_only_days_and_known_actions() {
        let q = |action: &str, from: &str, to: &str| AuditPageQuery {
            org: None,
            action: Some(action.into()),
            from: Some(from.into()),
            to: Some(to.into()),
            after: None,
        };
        let ok = Filter::of(&q("key.created", "2026-11-01", "2026-11-30")).unwrap();
        assert_eq!(ok.action, Some(AuditAction::KeyCreated));
        assert_eq!(
            ok.link_query("o"),
            "org=o&action=key.created&from=2026-11-01&to=2026-11-30"
        );
        let all = Filter::of(&q("", "", "")).unwrap();
        assert!(all.action.is_none() && all.from.is_none() && all.to.is_none());
        assert!(Filter::of(&q("all", "", "")).unwrap().action.is_none());
        for (action, from, to) in [
            ("key.exploded", "", ""),
            ("", "2026-13-01", ""),
            ("", "", "yesterday"),
            ("", "2026-11-01T00:00:00Z", ""),
            ("", "2026-1-01", ""),
        ] {
            let e = Filter::of(&q(action, from, to)).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{action} {from} {to}");
        }
    }

    #[test]
    fn the_last_day_is_included() {
        let f = Filter::of(&AuditPageQuery {
            to: Some("2026-11-30".into()),
            ..AuditPageQuery::default()
        })
        .unwrap();
        let org = creapic_core::id::OrgId::parse("0193a1b2-0000-7000-8000-000000000000").unwrap();
        let q = f.query(org, PageLimit::max());
        assert_eq!(q.until, Timestamp::parse("2026-12-01").ok());
    }
}
