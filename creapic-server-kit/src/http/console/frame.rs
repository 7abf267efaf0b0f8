//! The frame every console page is drawn in, so a page's template and handler say only what is
//! theirs.
//!
//! - [`Frame`]: what `base.html` needs on every page (the console's base path, the asset hrefs,
//!   the CSRF token of the sign-out form and whether to show it), built from the [`Viewer`].
//! - [`OrgFrame`]: what `org_base.html` needs on the pages about one organization (the header's
//!   navigation with the current page marked `aria-current`, the organization picker, the
//!   chosen organization's id, name and the viewer's role in it), built by [`load_org`] — the
//!   one place a page's `?org=` is checked against the viewer's own organizations
//!   ([`chosen_org`]): a malformed id is 400, somebody else's organization 404, never its page.
//! - [`Confirmation`]: the page that asks before something is deleted or removed
//!   (`confirm.html`), after [`required_org`].
//!
//! Design decision: a page's template struct holds a `frame` (and, for organization pages, an
//! `org`) field rather than repeating their fields, and the handler builds them with one call
//! that already answers the two pages every organization page can end on (no organization yet,
//! or an error as a sentence): a new page cannot forget the organization check or the sign-out
//! form's token.

use askama::Template;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::Response;
use creapic_core::id::OrgId;
use creapic_core::org::{Organization, Role};
use creapic_core::page::PageLimit;
use http::StatusCode;
use serde::Deserialize;

use crate::http::console::page;
use crate::http::console::session::Viewer;
use crate::http::error::Error;
use crate::http::service::AppState;

/// Most organizations in the picker.
pub const ORGS_SHOWN_MAX: u32 = 100;

/// What every page's `base.html` shows.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The console's base path, e.g. `/console`.
    pub base: String,
    /// The stylesheet's versioned href.
    pub style: String,
    /// The script's versioned href.
    pub script: String,
    /// The CSRF token the page's forms (sign-out included) carry; empty when signed out.
    pub csrf: String,
    /// Whether the person signed in with a kit session (then the header offers "Sign out").
    pub signed_in_here: bool,
}

impl Frame {
    /// The frame of a signed-in page.
    pub fn of(viewer: &Viewer) -> Frame {
        Frame {
            csrf: viewer.csrf.clone(),
            signed_in_here: viewer.session.is_some(),
            ..Frame::signed_out(&viewer.base)
        }
    }

    /// The frame of a page anyone may see (sign-in, errors): no form token, no sign-out.
    pub fn signed_out(base: &str) -> Frame {
        Frame {
            base: base.to_owned(),
            style: super::assets::style_href(base),
            script: super::assets::script_href(base),
            csrf: String::new(),
            signed_in_here: false,
        }
    }
}

/// The pages about one organization, in the order of the header's navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `/console/keys`.
    Keys,
    /// `/console/credits`.
    Credits,
    /// `/console/playground`.
    Playground,
    /// `/console/audit`.
    Audit,
    /// `/console/members`.
    Members,
}

impl Section {
    /// Every section, in navigation order.
    pub const ALL: [Section; 5] = [
        Section::Keys,
        Section::Credits,
        Section::Playground,
        Section::Audit,
        Section::Members,
    ];

    /// The page's path under the console's base (`keys` for `/console/keys`).
    pub fn path(self) -> &'static str {
        match self {
            Section::Keys => "keys",
            Section::Credits => "credits",
            Section::Playground => "playground",
            Section::Audit => "audit",
            Section::Members => "members",
        }
    }

    /// The link's text (and the page's heading).
    pub fn label(self) -> &'static str {
        match self {
            Section::Keys => "API keys",
            Section::Credits => "Credits",
            Section::Playground => "Playground",
            Section::Audit => "Audit log",
            Section::Members => "Members",
        }
    }
}

/// An organization in the picker.
#[derive(Debug, Clone)]
pub struct OrgChoice {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it is the chosen one.
    pub selected: bool,
}

/// A link of the header's navigation.
#[derive(Debug, Clone)]
pub struct NavLink {
    /// `{base}/{section}?org={id}`.
    pub href: String,
    /// The section's label.
    pub label: &'static str,
    /// Whether it is the page shown (`aria-current="page"`).
    pub current: bool,
}

/// What `org_base.html` shows: the navigation, the picker and the chosen organization.
#[derive(Debug, Clone)]
pub struct OrgFrame {
    /// The chosen organization's id, as text.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The viewer's role in it, as text.
    pub role: &'static str,
    /// The viewer's organizations (at most [`ORGS_SHOWN_MAX`]), the chosen one selected.
    pub orgs: Vec<OrgChoice>,
    /// The navigation, the current page marked.
    pub nav: Vec<NavLink>,
    /// Where the picker's form goes: the current page.
    pub action: String,
    /// The chosen organization.
    pub org: OrgId,
    /// The viewer's role in it.
    pub member_role: Role,
}

impl OrgFrame {
    /// Whether the viewer is an owner or admin of the organization.
    pub fn may_manage(&self) -> bool {
        self.member_role.may_manage_keys()
    }
}

/// The page for a person in no organization.
#[derive(Template)]
#[template(path = "console/no_org.html")]
struct NoOrgPage {
    frame: Frame,
    title: &'static str,
}

/// Query of a confirmation page: the organization the thing belongs to.
#[derive(Debug, Deserialize)]
pub struct OrgQuery {
    /// The organization.
    pub org: String,
}

/// The chosen organization of an organization page, with its frame; or the answer the page
/// ends with: the no-organization page (the viewer belongs to none), or an error page (a
/// malformed `org` is 400, one the viewer is not a member of is 404, the store failing).
pub async fn load_org(
    state: &AppState,
    viewer: &Viewer,
    org: Option<&str>,
    section: Section,
) -> Result<OrgFrame, Response> {
    let (mine, organization, role) = match chosen_org(state, viewer, org).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(no_org_page(viewer, section)),
        Err(e) => return Err(page::error(&viewer.base, &e)),
    };
    let base = &viewer.base;
    let id = organization.id.to_string();
    Ok(OrgFrame {
        nav: Section::ALL
            .into_iter()
            .map(|s| NavLink {
                href: format!("{base}/{}?org={id}", s.path()),
                label: s.label(),
                current: s == section,
            })
            .collect(),
        action: format!("{base}/{}", section.path()),
        orgs: org_choices(&mine, organization.id),
        name: organization.name.to_string(),
        role: role.as_str(),
        org: organization.id,
        member_role: role,
        id,
    })
}

/// The organization a confirmation page names (`?org=`, required), checked against the
/// viewer's own; or the error page (400 malformed, 404 not theirs).
pub async fn required_org(
    state: &AppState,
    viewer: &Viewer,
    query: Result<Query<OrgQuery>, QueryRejection>,
) -> Result<(Organization, Role), Response> {
    let found = async {
        let Ok(Query(query)) = query else {
            return Err(page::bad_query());
        };
        chosen_org(state, viewer, Some(&query.org))
            .await?
            .map(|(_, organization, role)| (organization, role))
            .ok_or(Error::Core(creapic_core::Error::NotFound {
                resource: "organization",
            }))
    }
    .await;
    found.map_err(|e| page::error(&viewer.base, &e))
}

/// `org` as an organization id (400 otherwise).
pub fn org_param(text: Option<&str>) -> Result<OrgId, Error> {
    text.and_then(|t| OrgId::parse(t).ok())
        .ok_or(Error::InvalidParameter {
            name: "org",
            message: "must be an organization id".into(),
        })
}

/// The viewer's organizations (at most [`ORGS_SHOWN_MAX`]) and the one a page is about: `org`
/// when given (400 if malformed, 404 if the viewer is not a member: never another
/// organization's page), else their first; `None` when they belong to none.
pub async fn chosen_org(
    state: &AppState,
    viewer: &Viewer,
    org: Option<&str>,
) -> Result<Option<(Vec<(Organization, Role)>, Organization, Role)>, Error> {
    let limit = PageLimit::new(ORGS_SHOWN_MAX).map_err(Error::Core)?;
    let mine = state
        .core()
        .organizations_of(viewer.user, None, limit)
        .await
        .map_err(Error::Core)?
        .items;
    let chosen = match org {
        Some(text) => {
            let id = org_param(Some(text))?;
            Some(
                mine.iter()
                    .find(|(o, _)| o.id == id)
                    .cloned()
                    .ok_or(Error::Core(creapic_core::Error::NotFound {
                        resource: "organization",
                    }))?,
            )
        }
        None => mine.first().cloned(),
    };
    Ok(chosen.map(|(organization, role)| (mine, organization, role)))
}

/// The picker's choices, `selected` marked.
fn org_choices(mine: &[(Organization, Role)], selected: OrgId) -> Vec<OrgChoice> {
    mine.iter()
        .map(|(o, _)| OrgChoice {
            id: o.id.to_string(),
            name: o.name.to_string(),
            selected: o.id == selected,
        })
        .collect()
}

/// The page for a person in no organization.
fn no_org_page(viewer: &Viewer, section: Section) -> Response {
    page::render(
        StatusCode::OK,
        &NoOrgPage {
            frame: Frame::of(viewer),
            title: section.label(),
        },
    )
}

/// What a confirmation page asks.
#[derive(Debug)]
pub struct Confirmation {
    /// The page's title, e.g. "Delete key".
    pub title: &'static str,
    /// The question, e.g. "Delete the key “Production”?".
    pub question: String,
    /// What happens if the person confirms.
    pub explanation: String,
    /// Where the confirming form posts.
    pub action: String,
    /// The confirming button's text.
    pub button: &'static str,
    /// Where "Cancel" goes.
    pub cancel: String,
}

/// The confirmation page.
#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    frame: Frame,
    org_id: String,
    ask: Confirmation,
}

/// Asks `ask` about something of `org` (its form carries the CSRF token and `org`); or the
/// error page.
pub fn confirm(viewer: &Viewer, org: OrgId, ask: Result<Confirmation, Error>) -> Response {
    match ask {
        Ok(ask) => page::render(
            StatusCode::OK,
            &ConfirmPage {
                frame: Frame::of(viewer),
                org_id: org.to_string(),
                ask,
            },
        ),
        Err(e) => page::error(&viewer.base, &e),
    }
}
