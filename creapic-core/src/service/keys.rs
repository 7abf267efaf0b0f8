//! API keys and authentication: creating, deleting, reading and listing the keys of an
//! organization (owners and admins only), and the calls that go through the
//! [`Authenticator`](crate::auth::Authenticator): verification and the coalesced last-used flush.
//!
//! A key's secret exists only in the [`CreatedKey`] that creation returns. Before the call
//! returns, this process's authenticator learns of a created key (no longer refused from its
//! memory of missing keys) and forgets a deleted one, so this process sees either change at once.

use crate::audit::{Actor, AuditAction, RequestContext};
use crate::auth::Principal;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{KeyId, OrgId};
use crate::key::{ApiKey, ApiKeySecret, KeyMode, KeyName, NewKey, generate_key};
use crate::page::Page;
use crate::scope::ScopeSet;
use crate::store::{KeyQuery, Store};

use super::Creapic;

/// What to create a key with.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Its name (trimmed, 1–64 characters).
    pub name: String,
    /// Its scopes.
    pub scopes: ScopeSet,
    /// Live or test.
    pub mode: KeyMode,
    /// When it stops working, if ever (must be in the future).
    pub expires_at: Option<Timestamp>,
}

/// A key just created: the only moment its secret exists outside the caller's hands.
#[derive(Debug)]
pub struct CreatedKey {
    /// The plaintext, to show once. Redacted in `Debug`.
    pub secret: ApiKeySecret,
    /// The record.
    pub key: ApiKey,
}

impl<S: Store + ?Sized> Creapic<S> {
    // ----- keys -----

    /// Checks, without changing anything, that `by` may create and delete keys of `org`
    /// (the checks [`Creapic::create_key`] starts with): an unknown organization, or one `by`
    /// is not a member of, is `NotFound`; a member who is neither owner nor admin `Forbidden`.
    /// For handlers that must authorize a caller before recording anything on their behalf.
    pub async fn authorize_key_management(&self, by: Actor, org: OrgId) -> Result<()> {
        self.require_org(org).await?;
        self.require_manager(by, org, "create keys").await
    }

    /// Creates a key for `org`. People must be owners or admins; keys created by the operator
    /// are attributed to the organization's first owner.
    pub async fn create_key(
        &self,
        by: Actor,
        org: OrgId,
        spec: KeySpec,
        ctx: &RequestContext,
    ) -> Result<CreatedKey> {
        let name = KeyName::new(&spec.name)?;
        self.require_org(org).await?;
        self.require_manager(by, org, "create keys").await?;
        let created_by = match by {
            Actor::User(user) => user,
            _ => self
                .store
                .first_owner(org)
                .await?
                .ok_or(Error::InvalidState("the organization has no owner"))?,
        };
        let now = self.now();
        if let Some(expires) = spec.expires_at
            && expires <= now
        {
            return Err(Error::invalid("expiresAt", "must be in the future"));
        }
        let secret = generate_key(spec.mode, self.rng.as_ref());
        let key = ApiKey {
            id: KeyId::generate(now, self.rng.as_ref()),
            org,
            name,
            prefix: secret.prefix(),
            scopes: spec.scopes,
            mode: spec.mode,
            created_at: now,
            created_by,
            last_used_at: None,
            deleted_at: None,
            expires_at: spec.expires_at,
        };
        let audit = self
            .audit_event(org, now, AuditAction::KeyCreated, by, ctx)
            .with_key(key.id, key.prefix)
            .with_detail(&format!("scopes={} mode={}", key.scopes, key.mode.as_str()));
        let new = NewKey {
            key,
            digest: secret.digest(),
            // Enforced by the store in the inserting transaction, never counted here first.
            active_max: self.config.keys_per_org_max,
        };
        self.store.insert_key(&new, &audit).await?;
        self.auth.note_created(&new.digest);
        Ok(CreatedKey {
            secret,
            key: new.key,
        })
    }

    /// Soft-deletes a key of `org`: immediate (this process refuses it before this returns),
    /// idempotent and unrecoverable. The record stays for audit.
    pub async fn delete_key(
        &self,
        by: Actor,
        org: OrgId,
        id: KeyId,
        ctx: &RequestContext,
    ) -> Result<ApiKey> {
        self.require_manager(by, org, "delete keys").await?;
        let now = self.now();
        let existing = self
            .store
            .key(org, id)
            .await?
            .ok_or(Error::NotFound { resource: "key" })?;
        let audit = self
            .audit_event(org, now, AuditAction::KeyDeleted, by, ctx)
            .with_key(existing.id, existing.prefix);
        let deleted = self
            .store
            .delete_key(org, id, now, &audit)
            .await?
            .ok_or(Error::NotFound { resource: "key" })?;
        self.auth.forget_key(id);
        Ok(deleted)
    }

    /// A key of `org` (never its secret or digest).
    pub async fn key(&self, by: Actor, org: OrgId, id: KeyId) -> Result<ApiKey> {
        self.require_manager(by, org, "view keys").await?;
        self.store
            .key(org, id)
            .await?
            .ok_or(Error::NotFound { resource: "key" })
    }

    /// Keys of `org`, oldest first.
    pub async fn list_keys(
        &self,
        by: Actor,
        org: OrgId,
        query: &KeyQuery,
    ) -> Result<Page<ApiKey, KeyId>> {
        self.require_manager(by, org, "list keys").await?;
        self.store.list_keys(org, query).await
    }

    // ----- authentication -----

    /// Verifies the request's credential (see [`Authenticator::authenticate`]).
    ///
    /// [`Authenticator::authenticate`]: crate::auth::Authenticator::authenticate
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<Principal> {
        self.auth.authenticate(authorization, x_api_key).await
    }

    /// [`Creapic::authenticate`] for a request from `client`, whose failed authentications are
    /// limited (see [`Authenticator::authenticate_from`]).
    ///
    /// [`Authenticator::authenticate_from`]: crate::auth::Authenticator::authenticate_from
    pub async fn authenticate_from(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Principal> {
        self.auth
            .authenticate_from(authorization, x_api_key, client)
            .await
    }

    /// Writes coalesced last-used times (see [`Authenticator::flush_usage`]).
    ///
    /// [`Authenticator::flush_usage`]: crate::auth::Authenticator::flush_usage
    pub async fn flush_usage(&self, force: bool) -> Result<usize> {
        self.auth.flush_usage(force).await
    }
}
