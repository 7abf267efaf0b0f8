//! The members page: who belongs to the organization, with their role and when they joined;
//! for owners and admins, "Add member" (an e-mail and a role), a role change per member and
//! "Remove" behind a confirmation page.
//!
//! The rules are the core's, exactly as for the JSON API: any member may read the list; owners
//! change anything, admins add, re-role and remove plain members only, and the last owner never
//! goes (`last_owner`). Each refusal is shown as a sentence with the status of the one table.
//! Changes answer with a redirect to the list (post/redirect/get), which says what was done.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use creapic_core::audit::Actor;
use creapic_core::id::UserId;
use creapic_core::org::{Member, Role};
use creapic_core::page::PageLimit;
use http::StatusCode;
use serde::Deserialize;

use crate::http::console::csrf::CheckedForm;
use crate::http::console::frame::{
    self, Confirmation, Frame, OrgFrame, OrgQuery, Section, org_param,
};
use crate::http::console::page::{self, When};
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::extract::AuditContext;
use crate::http::service::AppState;

/// Most members on one page of the list (a "Next page" link follows).
pub const MEMBERS_SHOWN_MAX: u32 = 100;

/// Query of `GET /console/members`.
#[derive(Debug, Default, Deserialize)]
pub struct MembersQuery {
    /// The organization (default: the person's first).
    pub org: Option<String>,
    /// The last user id of the previous page.
    pub after: Option<String>,
    /// What was just done (`added`, `changed`, `removed`), for the notice.
    pub done: Option<String>,
}

struct MemberRow {
    id: String,
    email: String,
    role: &'static str,
    joined: Option<When>,
    is_you: bool,
    roles: Vec<RoleChoice>,
}

struct RoleChoice {
    name: &'static str,
    selected: bool,
}

const ROLES: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];

fn role_choices(current: Option<Role>) -> Vec<RoleChoice> {
    ROLES
        .into_iter()
        .map(|r| RoleChoice {
            name: r.as_str(),
            selected: current == Some(r),
        })
        .collect()
}

/// The members page.
#[derive(Template)]
#[template(path = "console/members.html")]
struct MembersPage {
    frame: Frame,
    org: OrgFrame,
    members: Vec<MemberRow>,
    next_page: Option<String>,
    notice: Option<&'static str>,
    error: Option<String>,
    add_roles: Vec<RoleChoice>,
    email_value: String,
}

/// What a members page shows beyond the list.
#[derive(Default)]
struct Extras {
    notice: Option<&'static str>,
    error: Option<Error>,
    email_value: String,
    role_value: Option<Role>,
}

/// `GET /console/members?org=…`: the page.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<MembersQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let Ok(after) = query.after.as_deref().map(UserId::parse).transpose() else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let notice = match query.done.as_deref() {
        Some("added") => Some("Member added."),
        Some("changed") => Some("Role changed."),
        Some("removed") => Some("Member removed."),
        _ => None,
    };
    let extras = Extras {
        notice,
        ..Extras::default()
    };
    members_page(&state, &viewer, query.org.as_deref(), after, extras).await
}

/// `POST /console/members`: adds the person with this e-mail (created if new) with a role.
pub async fn add(
    State(state): State<AppState>,
    AuditContext(ctx): AuditContext,
    form: CheckedForm,
) -> Response {
    let CheckedForm { viewer, fields } = form;
    let org = fields.get("org").map(str::to_owned);
    let email = fields.get("email").unwrap_or("").trim().to_owned();
    let role = fields.get("role").and_then(|r| Role::parse(r).ok());
    let added = async {
        let org = org_param(org.as_deref())?;
        let role =
            role.ok_or_else(|| Error::Core(creapic_core::Error::invalid("role", "choose a role")))?;
        state
            .core()
            .add_member(Actor::User(viewer.user), org, &email, role, &ctx)
            .await
            .map_err(Error::Core)?;
        Ok::<_, Error>(org)
    }
    .await;
    match added {
        Ok(org) => page::redirect(&format!("{}/members?org={org}&done=added", viewer.base)),
        Err(e) => {
            let extras = Extras {
                error: Some(e),
                email_value: email,
                role_value: role,
                ..Extras::default()
            };
            members_page(&state, &viewer, org.as_deref(), None, extras).await
        }
    }
}

/// `POST /console/members/{user}/role`: changes a member's role.
pub async fn change_role(
    State(state): State<AppState>,
    Path(user): Path<String>,
    AuditContext(ctx): AuditContext,
    form: CheckedForm,
) -> Response {
    let CheckedForm { viewer, fields } = form;
    let org = fields.get("org").map(str::to_owned);
    let changed = async {
        let org = org_param(org.as_deref())?;
        let user = user_param(&user)?;
        let role = fields
            .get("role")
            .and_then(|r| Role::parse(r).ok())
            .ok_or_else(|| Error::Core(creapic_core::Error::invalid("role", "choose a role")))?;
        state
            .core()
            .change_role(Actor::User(viewer.user), org, user, role, &ctx)
            .await
            .map_err(Error::Core)?;
        Ok::<_, Error>(org)
    }
    .await;
    match changed {
        Ok(org) => page::redirect(&format!("{}/members?org={org}&done=changed", viewer.base)),
        Err(e) => {
            let extras = Extras {
                error: Some(e),
                ..Extras::default()
            };
            members_page(&state, &viewer, org.as_deref(), None, extras).await
        }
    }
}

/// `GET /console/members/{user}/remove?org=…`: asks before removing (owners and admins).
pub async fn confirm_remove(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(user): Path<String>,
    query: Result<Query<OrgQuery>, QueryRejection>,
) -> Response {
    let (organization, role) = match frame::required_org(&state, &viewer, query).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let ask = async {
        if !role.may_manage_keys() {
            return Err(Error::Core(creapic_core::Error::Forbidden {
                action: "change members",
            }));
        }
        let user = user_param(&user)?;
        let member = find_member(&state, &viewer, organization.id, user).await?;
        Ok(Confirmation {
            title: "Remove member",
            question: format!(
                "Remove {} from {}?",
                member.user.email.as_str(),
                organization.name
            ),
            explanation: "They lose access to the organization at once. The keys they created \
                 keep working until someone deletes them."
                .to_owned(),
            action: format!("{}/members/{}/remove", viewer.base, member.user.id),
            button: "Remove",
            cancel: format!("{}/members?org={}", viewer.base, organization.id),
        })
    }
    .await;
    frame::confirm(&viewer, organization.id, ask)
}

/// `POST /console/members/{user}/remove`: removes the member and goes back to the list.
pub async fn remove(
    State(state): State<AppState>,
    Path(user): Path<String>,
    AuditContext(ctx): AuditContext,
    form: CheckedForm,
) -> Response {
    let CheckedForm { viewer, fields } = form;
    let removed = async {
        let org = org_param(fields.get("org"))?;
        let user = user_param(&user)?;
        state
            .core()
            .remove_member(Actor::User(viewer.user), org, user, &ctx)
            .await
            .map_err(Error::Core)?;
        Ok::<_, Error>(org)
    }
    .await;
    match removed {
        Ok(org) => page::redirect(&format!("{}/members?org={org}&done=removed", viewer.base)),
        Err(e) => page::error(&viewer.base, &e),
    }
}

fn user_param(text: &str) -> Result<UserId, Error> {
    UserId::parse(text).map_err(|_| Error::InvalidParameter {
        name: "user",
        message: "must be a user id".into(),
    })
}

/// The member `user` of `org`, as the viewer may read it (pages through the list, bounded).
async fn find_member(
    state: &AppState,
    viewer: &Viewer,
    org: creapic_core::id::OrgId,
    user: UserId,
) -> Result<Member, Error> {
    let limit = PageLimit::new(MEMBERS_SHOWN_MAX).map_err(Error::Core)?;
    let mut after = None;
    // At most 100 pages of 100: far more members than an organization may hold.
    for _ in 0..100 {
        let page = state
            .core()
            .members(Actor::User(viewer.user), org, after, limit)
            .await
            .map_err(Error::Core)?;
        if let Some(found) = page.items.iter().find(|m| m.user.id == user) {
            return Ok(found.clone());
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Err(Error::Core(creapic_core::Error::NotFound {
        resource: "member",
    }))
}

/// Renders the members page of `org` (default: the viewer's first organization).
async fn members_page(
    state: &AppState,
    viewer: &Viewer,
    org: Option<&str>,
    after: Option<UserId>,
    extras: Extras,
) -> Response {
    let org = match frame::load_org(state, viewer, org, Section::Members).await {
        Ok(org) => org,
        Err(answer) => return answer,
    };
    let base = viewer.base.as_str();
    let listed = async {
        let limit = PageLimit::new(MEMBERS_SHOWN_MAX).map_err(Error::Core)?;
        state
            .core()
            .members(Actor::User(viewer.user), org.org, after, limit)
            .await
            .map_err(Error::Core)
    }
    .await;
    let members = match listed {
        Ok(members) => members,
        Err(e) => return page::error(base, &e),
    };
    let next_page = members
        .next
        .map(|last| format!("{base}/members?org={}&after={last}", org.id));
    let status = extras.error.as_ref().map_or(StatusCode::OK, Error::status);
    page::render(
        status,
        &MembersPage {
            frame: Frame::of(viewer),
            org,
            members: members
                .items
                .iter()
                .map(|m| MemberRow {
                    id: m.user.id.to_string(),
                    email: m.user.email.as_str().to_owned(),
                    role: m.role.as_str(),
                    joined: m.joined_at.map(When::of),
                    is_you: m.user.id == viewer.user,
                    roles: role_choices(Some(m.role)),
                })
                .collect(),
            next_page,
            notice: extras.notice,
            error: extras.error.as_ref().map(page::sentence),
            add_roles: role_choices(Some(extras.role_value.unwrap_or(Role::Member))),
            email_value: extras.email_value,
        },
    )
}
