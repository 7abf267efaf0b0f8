//! `client.organizations()`: `POST /api/public/organizations/create` (an API key with
//! `ORGANIZATION_WRITE`; the user who created the key becomes the owner), and the dashboard's
//! organizations and members — `GET /api/organizations` and
//! `client.organizations().members(org)` over `/api/organizations/{organizationId}/members` —
//! sent with [`crate::config::DashboardAuth`] (a signed-in person), never with the API key.
//! Listings come a page at a time or through a [`Paginator`], which follows `nextCursor`.

use creapic_core::wire::{
    AddMemberRequest, CreateOrganizationRequest, CreateOrganizationResponse, ListMembersResponse,
    ListOrganizationsResponse, MemberResponse, RoleWire, SetMemberRoleRequest,
};
use reqwest::Method;

use crate::client::{Auth, Call, Client, PostCall};
use crate::paginate::Paginator;

/// Options of the organization and member listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Page size, 1–1000 (server default 50).
    pub limit: Option<u32>,
}

/// Options of [`Organizations::list`].
pub type ListOrganizations = ListPage;
/// Options of [`Members::list`].
pub type ListMembers = ListPage;

/// Organizations.
#[derive(Debug, Clone, Copy)]
pub struct Organizations<'a> {
    client: &'a Client,
}

fn page_url(
    client: &Client,
    segments: &[&str],
    cursor: Option<&str>,
    limit: Option<u32>,
) -> url::Url {
    let mut url = client.endpoint(segments);
    {
        let mut q = url.query_pairs_mut();
        if let Some(cursor) = cursor {
            q.append_pair("cursor", cursor);
        }
        if let Some(limit) = limit {
            q.append_pair("limit", &limit.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

impl<'a> Organizations<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Organizations { client }
    }

    /// Creates an organization named `name` (1–100 characters). A retry with the same
    /// `Idempotency-Key` returns the same organization instead of a second one.
    pub fn create(&self, name: impl Into<String>) -> PostCall<'a, CreateOrganizationResponse> {
        let url = self
            .client
            .endpoint(&["api", "public", "organizations", "create"]);
        let body = CreateOrganizationRequest { name: name.into() };
        self.client.post(url, Auth::ApiKey, &body)
    }

    /// One page of the signed-in user's organizations, with their role in each, oldest first.
    pub fn list(&self, options: &ListOrganizations) -> Call<'a, ListOrganizationsResponse> {
        list_call(
            self.client,
            &["api", "organizations"],
            options.cursor.as_deref(),
            options.limit,
        )
    }

    /// The signed-in user's organizations, page after page from `options.cursor`.
    pub fn pages(&self, options: &ListOrganizations) -> Paginator<'a, ListOrganizationsResponse> {
        let client = self.client;
        let limit = options.limit;
        Paginator::new(move |cursor| list_call(client, &["api", "organizations"], cursor, limit))
            .starting_at(options.cursor.clone())
    }

    /// The members of the organization `organization_id`.
    pub fn members(&self, organization_id: &str) -> Members<'a> {
        Members {
            client: self.client,
            organization_id: organization_id.to_owned(),
        }
    }
}

fn list_call<'a, T: serde::de::DeserializeOwned + Send + 'a>(
    client: &'a Client,
    segments: &[&str],
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Call<'a, T> {
    let url = page_url(client, segments, cursor, limit);
    client.json_call(Ok(client.spec(Method::GET, url, Auth::Dashboard)))
}

/// An organization's members (dashboard). Any member may list them; owners and admins change
/// them (admins plain members only); the last owner can be neither demoted nor removed
/// (`ErrorCode::LastOwner`). Changes carry an `Idempotency-Key`, so a retried one is answered
/// with the first answer.
#[derive(Debug, Clone)]
pub struct Members<'a> {
    client: &'a Client,
    organization_id: String,
}

impl<'a> Members<'a> {
    fn url(&self, user_id: Option<&str>) -> crate::error::Result<url::Url> {
        super::path_id("organization_id", &self.organization_id)?;
        let mut segments = vec![
            "api",
            "organizations",
            self.organization_id.as_str(),
            "members",
        ];
        if let Some(user) = user_id {
            super::path_id("user_id", user)?;
            segments.push(user);
        }
        Ok(self.client.endpoint(&segments))
    }

    /// One page of the members, by user id.
    pub fn list(&self, options: &ListMembers) -> Call<'a, ListMembersResponse> {
        let spec = self.url(None).map(|mut url| {
            let paged = page_url(self.client, &[], options.cursor.as_deref(), options.limit);
            url.set_query(paged.query());
            self.client.spec(Method::GET, url, Auth::Dashboard)
        });
        self.client.json_call(spec)
    }

    /// The members, page after page from `options.cursor`.
    pub fn pages(&self, options: &ListMembers) -> Paginator<'a, ListMembersResponse> {
        let members = self.clone();
        let limit = options.limit;
        Paginator::new(move |cursor| {
            members.list(&ListMembers {
                cursor: cursor.map(str::to_owned),
                limit,
            })
        })
        .starting_at(options.cursor.clone())
    }

    /// Adds the person with this e-mail (created if new) with `role` (201). Already a member:
    /// `ErrorCode::AlreadyMember`.
    pub fn add(&self, email: impl Into<String>, role: RoleWire) -> PostCall<'a, MemberResponse> {
        let body = AddMemberRequest {
            email: email.into(),
            role,
        };
        self.client
            .idempotent(Method::POST, self.url(None), Auth::Dashboard, Some(&body))
    }

    /// Changes a member's role.
    pub fn set_role(&self, user_id: &str, role: RoleWire) -> PostCall<'a, MemberResponse> {
        let body = SetMemberRoleRequest { role };
        self.client.idempotent(
            Method::PATCH,
            self.url(Some(user_id)),
            Auth::Dashboard,
            Some(&body),
        )
    }

    /// Removes a member; the answer is the member as they were.
    pub fn remove(&self, user_id: &str) -> PostCall<'a, MemberResponse> {
        self.client.idempotent::<(), _>(
            Method::DELETE,
            self.url(Some(user_id)),
            Auth::Dashboard,
            None,
        )
    }
}
