//! `client.organizations()`: `POST /api/public/organizations/create` (scope
//! `ORGANIZATION_WRITE`). The user who created the key becomes the new organization's owner.

use creapic_core::wire::{CreateOrganizationRequest, CreateOrganizationResponse};

use crate::client::{Auth, Client, PostCall};

/// Organizations.
#[derive(Debug, Clone, Copy)]
pub struct Organizations<'a> {
    client: &'a Client,
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
}
