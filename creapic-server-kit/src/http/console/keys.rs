//! The API keys page: the signed-in person's organizations to pick from, the organization's
//! keys (name, prefix, scopes, last used, created), "Add key" for owners and admins (a name and
//! the scopes as checkboxes; the new key shown exactly once, with a copy button), and "Delete"
//! behind a confirmation page.
//!
//! The new key is in the answer to the form's POST and nowhere else (no redirect could carry it
//! without storing it). So the form is once-only ([`csrf::form_key`]): sent again — the browser
//! reloading that answer, a double click — it adds nothing and says so, and the key is not shown
//! again ([`SENT_TWICE`]).
//!
//! Each handler reads who (the [`Viewer`], or a [`CheckedForm`] whose CSRF token checked out),
//! makes its calls into the core — which decides, as for the JSON API, who may see and change
//! which keys (members `Forbidden`, outsiders `NotFound`) — and renders the answer. The
//! organization is always named by the page (`?org=`, a form field) and checked against the
//! person's own organizations before anything is read.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use creapic_core::KeySpec;
use creapic_core::audit::Actor;
use creapic_core::id::KeyId;
use creapic_core::key::{ApiKey, KeyMode};
use creapic_core::page::PageLimit;
use creapic_core::scope::{Scope, ScopeSet};
use creapic_core::store::KeyQuery;
use http::StatusCode;
use serde::Deserialize;

use crate::http::console::csrf::{self, CheckedForm};
use crate::http::console::frame::{
    self, Confirmation, Frame, OrgFrame, OrgQuery, Section, org_param,
};
use crate::http::console::page::{self, When};
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::extract::AuditContext;
use crate::http::idempotent::{self, Once};
use crate::http::service::AppState;

/// Most keys on one page of the list (a "Next page" link follows).
pub const KEYS_SHOWN_MAX: u32 = 100;

/// The warning shown above a new key (the 001 document's wording).
pub const COPY_WARNING: &str = "Copy your key immediately - you won't be able to see it again.";

/// What a person reads when the "Add key" form they sent was sent before (a reload of the
/// page that showed the key, a second click): nothing more was created, and the key is not shown.
pub const SENT_TWICE: &str = "This form was already sent and its key was created then. A key \
     is shown only once: if you did not copy it, delete it and add another.";

/// Query of `GET /console/keys`.
#[derive(Debug, Default, Deserialize)]
pub struct KeysQuery {
    /// The organization (default: the person's first).
    pub org: Option<String>,
    /// The last key id of the previous page.
    pub after: Option<String>,
    /// The prefix of a key just deleted (for the notice).
    pub deleted: Option<String>,
}

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    scopes: Vec<&'static str>,
    last_used: Option<When>,
    created: When,
}

struct ScopeChoice {
    name: &'static str,
    description: &'static str,
    checked: bool,
}

struct Created {
    key: String,
    name: String,
}

/// The keys page.
#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    frame: Frame,
    org: OrgFrame,
    keys: Vec<KeyRow>,
    next_page: Option<String>,
    created: Option<Created>,
    copy_warning: &'static str,
    notice: Option<String>,
    error: Option<String>,
    scopes: Vec<ScopeChoice>,
    name_value: String,
    /// The "Add key" form's id ([`csrf::new_form_id`]): sent twice, it adds one key.
    form_id: String,
}

/// What a keys page shows beyond the list.
#[derive(Default)]
struct Extras {
    created: Option<Created>,
    notice: Option<String>,
    error: Option<Error>,
    name_value: String,
    checked: Vec<Scope>,
}

/// `GET /console/keys?org=…`: the page.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<KeysQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page::error(&viewer.base, &page::bad_query());
    };
    let after = match page::after(query.after.as_deref(), KeyId::parse, "a key id") {
        Ok(after) => after,
        Err(e) => return page::error(&viewer.base, &e),
    };
    let notice = query
        .deleted
        .filter(|p| p.len() <= 12 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|p| format!("Key {p}… deleted. The API refuses it from now on."));
    let extras = Extras {
        notice,
        ..Extras::default()
    };
    keys_page(&state, &viewer, query.org.as_deref(), after, extras).await
}

/// `POST /console/keys`: adds a key (owners and admins) and shows it once.
pub async fn create(
    State(state): State<AppState>,
    AuditContext(ctx): AuditContext,
    form: CheckedForm,
) -> Response {
    let CheckedForm { viewer, fields } = form;
    let org = fields.get("org").map(str::to_owned);
    let name = fields.get("name").unwrap_or("").to_owned();
    let checked: Vec<Scope> = fields
        .all("scope")
        .filter_map(|s| Scope::parse(s).ok())
        .collect();
    let made = async {
        let org = org_param(org.as_deref())?;
        let scopes = ScopeSet::new(checked.iter().copied()).map_err(|_| {
            Error::Core(creapic_core::Error::invalid(
                "scopes",
                "choose at least one scope",
            ))
        })?;
        let spec = KeySpec {
            name: name.clone(),
            scopes,
            mode: KeyMode::Live,
            expires_at: None,
        };
        let core = state.core();
        let actor = Actor::User(viewer.user);
        let Some(key) = csrf::form_key(&viewer, "add-key", &fields) else {
            let created = core.create_key(actor, org, spec, &ctx).await;
            return created.map(Some).map_err(Error::Core);
        };
        // Authorized before the form's record is opened: a refused person opens none.
        core.authorize_key_management(actor, org)
            .await
            .map_err(Error::Core)?;
        let fingerprint = csrf::form_fingerprint("/console/keys", &fields);
        let ran = idempotent::once(&state, org, &key, fingerprint, |_| async {
            let created = core.create_key(actor, org, spec, &ctx).await?;
            // What a second sending of the form finds: that it happened, never the key.
            Ok((created, idempotent::already_processed()))
        })
        .await?;
        Ok::<_, Error>(match ran {
            Once::Ran(created) => Some(created),
            Once::Replayed(_) => None,
        })
    }
    .await;
    let extras = match made {
        Ok(Some(created)) => Extras {
            created: Some(Created {
                key: created.secret.expose().to_owned(),
                name: created.key.name.to_string(),
            }),
            ..Extras::default()
        },
        Ok(None) => Extras {
            notice: Some(SENT_TWICE.to_owned()),
            ..Extras::default()
        },
        Err(e) => Extras {
            error: Some(e),
            name_value: name,
            checked,
            ..Extras::default()
        },
    };
    keys_page(&state, &viewer, org.as_deref(), None, extras).await
}

/// `GET /console/keys/{id}/delete?org=…`: asks before deleting.
pub async fn confirm_delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    query: Result<Query<OrgQuery>, QueryRejection>,
) -> Response {
    let (organization, _) = match frame::required_org(&state, &viewer, query).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let ask = async {
        let id = key_param(&id)?;
        let key = state
            .core()
            .key(Actor::User(viewer.user), organization.id, id)
            .await
            .map_err(Error::Core)?;
        if key.deleted_at.is_some() {
            return Err(Error::Core(creapic_core::Error::NotFound {
                resource: "key",
            }));
        }
        Ok(Confirmation {
            title: "Delete key",
            question: format!("Delete the key “{}”?", key.name),
            explanation: format!(
                "The key {}… of {} stops working at once: every request made with it is \
                 refused from now on. This cannot be undone.",
                key.prefix, organization.name
            ),
            action: format!("{}/keys/{}/delete", viewer.base, key.id),
            button: "Delete",
            cancel: format!("{}/keys?org={}", viewer.base, organization.id),
        })
    }
    .await;
    frame::confirm(&viewer, organization.id, ask)
}

/// `POST /console/keys/{id}/delete`: deletes the key (the API refuses it at once) and goes back
/// to the list.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditContext(ctx): AuditContext,
    form: CheckedForm,
) -> Response {
    let CheckedForm { viewer, fields } = form;
    let deleted = async {
        let org = org_param(fields.get("org"))?;
        let id = key_param(&id)?;
        let key = state
            .core()
            .delete_key(Actor::User(viewer.user), org, id, &ctx)
            .await
            .map_err(Error::Core)?;
        Ok::<_, Error>(key)
    }
    .await;
    match deleted {
        Ok(key) => page::redirect(&format!(
            "{}/keys?org={}&deleted={}",
            viewer.base, key.org, key.prefix
        )),
        Err(e) => page::error(&viewer.base, &e),
    }
}

fn key_param(text: &str) -> Result<KeyId, Error> {
    KeyId::parse(text).map_err(|_| Error::InvalidParameter {
        name: "key",
        message: "must be a key id".into(),
    })
}

/// Renders the keys page of `org` (default: the viewer's first organization) with `extras`.
async fn keys_page(
    state: &AppState,
    viewer: &Viewer,
    org: Option<&str>,
    after: Option<KeyId>,
    extras: Extras,
) -> Response {
    let org = match frame::load_org(state, viewer, org, Section::Keys).await {
        Ok(org) => org,
        Err(answer) => return answer,
    };
    let base = viewer.base.as_str();
    let keys = if org.may_manage() {
        let listed = async {
            let query = KeyQuery {
                include_deleted: false,
                after,
                limit: PageLimit::new(KEYS_SHOWN_MAX).map_err(Error::Core)?,
            };
            state
                .core()
                .list_keys(Actor::User(viewer.user), org.org, &query)
                .await
                .map_err(Error::Core)
        }
        .await;
        match listed {
            Ok(page) => Some(page),
            Err(e) => return page::error(base, &e),
        }
    } else {
        None
    };
    let next_page = keys
        .as_ref()
        .and_then(|p| p.next)
        .map(|last| format!("{base}/keys?org={}&after={last}", org.id));
    let rows = keys.map(|p| p.items).unwrap_or_default();
    let status = match &extras.error {
        Some(e) => e.status(),
        None if extras.created.is_some() => StatusCode::CREATED,
        None => StatusCode::OK,
    };
    page::render(
        status,
        &KeysPage {
            frame: Frame::of(viewer),
            org,
            keys: rows.iter().map(row).collect(),
            next_page,
            created: extras.created,
            copy_warning: COPY_WARNING,
            notice: extras.notice,
            error: extras.error.as_ref().map(page::sentence),
            scopes: Scope::ALL
                .into_iter()
                .map(|s| ScopeChoice {
                    name: s.as_str(),
                    description: describe(s),
                    checked: extras.checked.contains(&s),
                })
                .collect(),
            name_value: extras.name_value,
            form_id: csrf::new_form_id(),
        },
    )
}

fn row(key: &ApiKey) -> KeyRow {
    KeyRow {
        id: key.id.to_string(),
        name: key.name.to_string(),
        prefix: key.prefix.to_string(),
        scopes: key.scopes.iter().map(Scope::as_str).collect(),
        last_used: key.last_used_at.map(When::of),
        created: When::of(key.created_at),
    }
}

fn describe(scope: Scope) -> &'static str {
    match scope {
        Scope::ImageGeneration => "generate images and run bulk image jobs",
        Scope::SceneRender => "render scenes",
        Scope::OrganizationWrite => "create organizations",
        _ => "",
    }
}
