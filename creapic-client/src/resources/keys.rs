//! `client.keys()`: the dashboard's API keys block (`GET`/`POST /api/keys`,
//! `DELETE /api/keys/{id}`), for hosts that proxy the dashboard routes.
//!
//! These routes authenticate a *person* through the host's session layer, so they are sent
//! with [`crate::config::DashboardAuth`] and never with the API key. The one answer that holds a
//! new key's plaintext is decoded straight into [`CreatedKey`], whose key is an
//! [`ApiKeySecret`]: zeroized on drop and redacted in `Debug`, unlike a plain `String`.

use creapic_core::key::ApiKeySecret;
use creapic_core::wire::{
    ApiKeyInfo, CreateKeyRequest, CreateKeyResponse, DeleteKeyResponse, ListKeysResponse,
};
use reqwest::Method;

use crate::client::{Auth, Call, Client, PostCall, Raw};
use crate::error::Result;

/// Options of [`Keys::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListKeys {
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Page size, 1–1000 (server default 50).
    pub limit: Option<u32>,
    /// Include deleted keys.
    pub include_deleted: bool,
}

/// A key just created: the plaintext (shown this once) and its record.
#[derive(Debug)]
pub struct CreatedKey {
    /// The plaintext key. Store it now: it is never shown again. `Debug` prints `[REDACTED]`.
    pub key: ApiKeySecret,
    /// The key's record (id, prefix, scopes, …).
    pub api_key: ApiKeyInfo,
}

/// Dashboard key management.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    client: &'a Client,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Keys { client }
    }

    /// An organization's keys, oldest first (never their secrets).
    pub fn list(&self, organization_id: &str, options: &ListKeys) -> Call<'a, ListKeysResponse> {
        let mut url = self.client.endpoint(&["api", "keys"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("organizationId", organization_id);
            if let Some(cursor) = &options.cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(limit) = options.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if options.include_deleted {
                q.append_pair("includeDeleted", "true");
            }
        }
        let spec = self.client.spec(Method::GET, url, Auth::Dashboard);
        self.client.json_call(Ok(spec))
    }

    /// Every key of the organization, page by page (1000 per page), following `nextCursor`.
    pub fn pages(
        &self,
        organization_id: &str,
        include_deleted: bool,
    ) -> crate::paginate::Paginator<'a, ListKeysResponse> {
        let handle = *self;
        let org = organization_id.to_owned();
        crate::paginate::Paginator::new(move |cursor| {
            handle.list(
                &org,
                &ListKeys {
                    cursor: cursor.map(str::to_owned),
                    limit: Some(1000),
                    include_deleted,
                },
            )
        })
    }

    /// Creates a key. A retry of this call whose first answer was lost is answered
    /// `already_processed` (409): the key exists, but its plaintext is never shown twice —
    /// delete it and create another.
    pub fn create(&self, request: CreateKeyRequest) -> PostCall<'a, CreatedKey> {
        let url = self.client.endpoint(&["api", "keys"]);
        self.client
            .post_with(url, Auth::Dashboard, &request, decode_created_key)
    }

    /// Deletes a key, immediately and for good (deleting it again is not an error).
    pub fn delete(&self, organization_id: &str, key_id: &str) -> Call<'a, DeleteKeyResponse> {
        let spec = super::path_id("key_id", key_id).map(|()| {
            let mut url = self.client.endpoint(&["api", "keys", key_id]);
            url.query_pairs_mut()
                .append_pair("organizationId", organization_id);
            self.client.spec(Method::DELETE, url, Auth::Dashboard)
        });
        self.client.json_call(spec)
    }
}

fn decode_created_key(raw: Raw) -> Result<CreatedKey> {
    let mut body: CreateKeyResponse =
        serde_json::from_slice(&raw.body).map_err(|e| raw.decode_error(e))?;
    // Taken out, so the response's own copy (zeroized on drop) is empty.
    let key = ApiKeySecret::new(std::mem::take(&mut body.key))
        .map_err(|_| raw.decode_error("the server returned a malformed key"))?;
    Ok(CreatedKey {
        key,
        api_key: body.api_key.clone(),
    })
}
