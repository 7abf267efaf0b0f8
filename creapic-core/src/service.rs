//! [`Creapic`]: the service logic over a [`Store`], a [`Clock`] and a [`RandomSource`].
//!
//! This is what hosts call. It validates input, enforces roles, scopes and tenancy, mints ids
//! and timestamps, builds audit events, and hands each change to the store as one atomic call.
//! It never touches HTTP or SQL; the server kit maps its errors to responses, and the stores
//! turn its calls into transactions.
//!
//! Two kinds of callers act on organizations: people ([`Actor::User`], whose role is checked)
//! and the operator of the installation ([`Actor::Operator`]: the admin CLI or the host's own
//! code, trusted). API keys ([`Principal`]) call the public endpoints and may not manage keys.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Actor, AuditAction, AuditEvent, AuditQuery, AuditRecord, RequestContext};
use crate::audit_chain::{ChainReport, ChainVerifier};
use crate::auth::{AuthConfig, Authenticator, Principal};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::{Error, Result};
use crate::finished_jobs::FinishedJobs;
use crate::generation::{GenerationOutcome, GenerationParams, GenerationRecord};
use crate::id::{AttemptId, AuditId, EntryId, GenerationId, HoldId, JobId, KeyId, OrgId, UserId};
use crate::idempotency::{Abandon, IdempotencyBegin, RequestFingerprint, StoredResponse};
use crate::job::{Enqueued, FinishItem, ItemOutcome, Job, JobKind, JobSummary, NewJob, WorkerId};
use crate::key::{ApiKey, ApiKeySecret, KeyMode, KeyName, NewKey, generate_key};
use crate::ledger::{
    Credits, DailyUsage, DayRange, IdempotencyKey, LedgerEntry, LedgerOp, LedgerReceipt,
    LedgerRequest,
};
use crate::org::{Email, Member, OrgName, Organization, Removal, Role, RoleChange, User};
use crate::page::{Page, PageLimit};
use crate::random::{OsRandom, RandomSource};
use crate::scope::{Scope, ScopeSet};
use crate::store::{KeyQuery, Store};

/// Most times [`Creapic::verify_audit_chain`] restarts because a purge moved the anchor.
pub const VERIFY_RESTARTS_MAX: u32 = 3;

/// Default [`CoreConfig::stale_hold_after`]: 15 minutes, several times the longest provider call
/// with its retries.
pub const STALE_HOLD_AFTER: Duration = Duration::from_secs(15 * 60);

/// Most holds one [`Creapic::release_stale_holds`] call releases (the next call takes the rest).
pub const STALE_HOLDS_PER_SWEEP: u32 = 100;

/// Settings of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// Verification cache and last-used flushing.
    pub auth: AuthConfig,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// How long HTTP idempotency records are kept (at least 24 h).
    pub idempotency_retention: Duration,
    /// Most keys an organization may have that are not deleted.
    pub keys_per_org_max: u64,
    /// Most organizations one user may own when they are created by that user or by a key
    /// (`POST /api/public/organizations/create`); the operator is not limited.
    pub orgs_per_owner_max: u64,
    /// Longest lease a worker may ask for.
    pub lease_max: Duration,
    /// Age after which an open hold of a synchronous request (no job) counts as abandoned and
    /// [`Creapic::release_stale_holds`] gives its credits back. Keep it well above the longest a
    /// request may spend between reserve and capture (provider timeouts × retries).
    pub stale_hold_after: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            auth: AuthConfig::default(),
            audit_retention: crate::audit::DEFAULT_RETENTION,
            idempotency_retention: crate::idempotency::RETENTION,
            keys_per_org_max: 1000,
            orgs_per_owner_max: 100,
            lease_max: Duration::from_secs(15 * 60),
            stale_hold_after: STALE_HOLD_AFTER,
        }
    }
}

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

/// A job to submit through an API key.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Bulk images or a scene.
    pub kind: JobKind,
    /// One input per item.
    pub inputs: Vec<String>,
    /// Credits per succeeded item.
    pub unit_cost: Credits,
}

/// Builds a [`Creapic`] with a chosen clock, randomness and configuration.
pub struct CreapicBuilder<S: ?Sized> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: CoreConfig,
}

impl<S: Store + ?Sized> CreapicBuilder<S> {
    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The randomness (default: the OS CSPRNG).
    pub fn random(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = rng;
        self
    }

    /// The configuration.
    pub fn config(mut self, config: CoreConfig) -> Self {
        self.config = config;
        self
    }

    /// The service.
    pub fn build(self) -> Creapic<S> {
        let auth = Authenticator::new(
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            Arc::clone(&self.rng),
            self.config.auth,
        );
        Creapic {
            store: self.store,
            clock: self.clock,
            rng: self.rng,
            config: self.config,
            auth,
            finished_jobs: FinishedJobs::default(),
        }
    }
}

/// The creapic service logic.
pub struct Creapic<S: ?Sized> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: CoreConfig,
    auth: Authenticator<S>,
    /// Finished jobs, immutable, so polling one costs no store read.
    finished_jobs: FinishedJobs,
}

impl<S: ?Sized> std::fmt::Debug for Creapic<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creapic")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized> Creapic<S> {
    /// A service over `store` with the system clock, OS randomness and default settings.
    pub fn new(store: Arc<S>) -> Self {
        Creapic::builder(store).build()
    }

    /// A builder over `store`.
    pub fn builder(store: Arc<S>) -> CreapicBuilder<S> {
        CreapicBuilder {
            store,
            clock: Arc::new(SystemClock),
            rng: Arc::new(OsRandom),
            config: CoreConfig::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The randomness.
    pub fn random(&self) -> &Arc<dyn RandomSource> {
        &self.rng
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The authenticator (for hosts running the usage flush or pushing revocations).
    pub fn authenticator(&self) -> &Authenticator<S> {
        &self.auth
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn audit_event(
        &self,
        org: OrgId,
        at: Timestamp,
        action: AuditAction,
        actor: Actor,
        ctx: &RequestContext,
    ) -> AuditEvent {
        AuditEvent::new(
            AuditId::generate(at, self.rng.as_ref()),
            org,
            at,
            action,
            actor,
            ctx,
        )
    }

    async fn require_org(&self, org: OrgId) -> Result<Organization> {
        self.store.org(org).await?.ok_or(Error::NotFound {
            resource: "organization",
        })
    }

    /// Checks that `by` may manage the keys of `org`. People need owner or admin; a person
    /// outside the organization is told the organization does not exist.
    async fn require_manager(&self, by: Actor, org: OrgId, action: &'static str) -> Result<()> {
        match by {
            Actor::Operator | Actor::System => Ok(()),
            Actor::Key(_) => Err(Error::Forbidden { action }),
            Actor::User(user) => match self.store.role(org, user).await? {
                Some(role) if role.may_manage_keys() => Ok(()),
                Some(_) => Err(Error::Forbidden { action }),
                None => Err(Error::NotFound {
                    resource: "organization",
                }),
            },
        }
    }

    // ----- users and organizations -----

    /// The user with this e-mail, created if new.
    pub async fn ensure_user(&self, email: &str) -> Result<User> {
        let email = Email::new(email)?;
        let now = self.now();
        let user = User {
            id: UserId::generate(now, self.rng.as_ref()),
            email,
            created_at: now,
        };
        self.store.upsert_user(&user).await
    }

    /// Creates an organization owned by `owner`.
    pub async fn create_org(
        &self,
        name: &str,
        owner: UserId,
        by: Actor,
        ctx: &RequestContext,
    ) -> Result<Organization> {
        let name = OrgName::new(name)?;
        if let Actor::User(user) = by
            && user != owner
        {
            return Err(Error::Forbidden {
                action: "create an organization for someone else",
            });
        }
        let now = self.now();
        let org = Organization {
            id: OrgId::generate(now, self.rng.as_ref()),
            name,
            created_at: now,
        };
        let audit = self
            .audit_event(org.id, now, AuditAction::OrgCreated, by, ctx)
            .with_detail(&format!("owner={owner}"));
        let owned_max = match by {
            Actor::Operator | Actor::System => u64::MAX,
            Actor::User(_) | Actor::Key(_) => self.config.orgs_per_owner_max,
        };
        self.store
            .create_org(&org, owner, owned_max, &audit)
            .await?;
        Ok(org)
    }

    /// Creates an organization through an API key with the `ORGANIZATION_WRITE` scope; the
    /// user who created the key becomes its owner.
    pub async fn create_org_with_key(
        &self,
        principal: &Principal,
        name: &str,
        ctx: &RequestContext,
    ) -> Result<Organization> {
        principal.require(Scope::OrganizationWrite)?;
        let org = self
            .create_org(name, principal.created_by, Actor::Key(principal.key), ctx)
            .await?;
        Ok(org)
    }

    // ----- members -----

    /// Checks, without changing anything, that `by` may change the members of `org` at all:
    /// an unknown organization, or one `by` is not a member of, is `NotFound`; a plain member
    /// (or an API key) `Forbidden`. What an admin may do to a given member is decided by the
    /// change itself. For handlers that authorize a caller before recording anything.
    pub async fn authorize_member_management(&self, by: Actor, org: OrgId) -> Result<()> {
        self.require_org(org).await?;
        self.require_manager(by, org, "change members").await
    }

    /// The acting person and their role in `org` (`None` for the operator); an API key is
    /// `Forbidden`, a person outside the organization `NotFound`, a plain member `Forbidden`.
    async fn member_manager(&self, by: Actor, org: OrgId) -> Result<Option<(UserId, Role)>> {
        self.require_org(org).await?;
        match by {
            Actor::Operator | Actor::System => Ok(None),
            Actor::Key(_) => Err(Error::Forbidden {
                action: "change members",
            }),
            Actor::User(user) => match self.store.role(org, user).await? {
                Some(role) if role.may_manage_keys() => Ok(Some((user, role))),
                Some(_) => Err(Error::Forbidden {
                    action: "change members",
                }),
                None => Err(Error::NotFound {
                    resource: "organization",
                }),
            },
        }
    }

    /// Whether the manager `by` may move a member from `from` to `to` ([`Role::may_change_member`]).
    fn allow_member_change(
        by: Option<(UserId, Role)>,
        from: Option<Role>,
        to: Option<Role>,
    ) -> Result<()> {
        match by {
            Some((_, role)) if !role.may_change_member(from, to) => Err(Error::Forbidden {
                action: "add, change or remove an owner or admin (admins manage plain members)",
            }),
            _ => Ok(()),
        }
    }

    /// The organizations `user` belongs to, with their role in each, oldest first. A person
    /// lists their own; the operator anyone's.
    pub async fn organizations_of(
        &self,
        user: UserId,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<(Organization, Role), OrgId>> {
        self.store.orgs_of_user(user, after, limit).await
    }

    /// The members of `org`, by user id. Any member may read them; a person outside the
    /// organization is told it does not exist; an API key is `Forbidden`.
    pub async fn members(
        &self,
        by: Actor,
        org: OrgId,
        after: Option<UserId>,
        limit: PageLimit,
    ) -> Result<Page<Member, UserId>> {
        self.require_org(org).await?;
        match by {
            Actor::Operator | Actor::System => {}
            Actor::Key(_) => {
                return Err(Error::Forbidden {
                    action: "list members",
                });
            }
            Actor::User(user) => {
                if self.store.role(org, user).await?.is_none() {
                    return Err(Error::NotFound {
                        resource: "organization",
                    });
                }
            }
        }
        self.store.members(org, after, limit).await
    }

    /// Adds the person with this e-mail (created if new) to `org` with `role`. Owners may add
    /// any role, admins members only, the operator anyone; `AlreadyMember` if they belong
    /// already. Nobody is created for a caller who may not add them.
    pub async fn add_member(
        &self,
        by: Actor,
        org: OrgId,
        email: &str,
        role: Role,
        ctx: &RequestContext,
    ) -> Result<Member> {
        let email = Email::new(email)?;
        let manager = self.member_manager(by, org).await?;
        Self::allow_member_change(manager, None, Some(role))?;
        let user = self.ensure_user(email.as_str()).await?;
        if self.store.role(org, user.id).await?.is_some() {
            return Err(Error::AlreadyMember);
        }
        self.write_role(by, manager, org, user.id, None, role, ctx)
            .await
    }

    /// Changes the role of a member of `org` (`NotFound` for someone who is not a member).
    /// Owners may set any role, admins may touch plain members only and only to `member`, the
    /// operator anything; nobody may demote the last owner (`LastOwner`).
    pub async fn change_role(
        &self,
        by: Actor,
        org: OrgId,
        user: UserId,
        role: Role,
        ctx: &RequestContext,
    ) -> Result<Member> {
        let manager = self.member_manager(by, org).await?;
        let from = self
            .store
            .role(org, user)
            .await?
            .ok_or(Error::NotFound { resource: "member" })?;
        Self::allow_member_change(manager, Some(from), Some(role))?;
        self.write_role(by, manager, org, user, Some(from), role, ctx)
            .await
    }

    /// Sets `user`'s role in `org`, adding them if they are not a member: the rules of
    /// [`Creapic::add_member`] and [`Creapic::change_role`] (an admin may neither promote
    /// anyone nor touch an owner or admin; the last owner stays).
    pub async fn set_role(
        &self,
        by: Actor,
        org: OrgId,
        user: UserId,
        role: Role,
        ctx: &RequestContext,
    ) -> Result<Member> {
        let manager = self.member_manager(by, org).await?;
        let from = self.store.role(org, user).await?;
        Self::allow_member_change(manager, from, Some(role))?;
        self.write_role(by, manager, org, user, from, role, ctx)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_role(
        &self,
        by: Actor,
        manager: Option<(UserId, Role)>,
        org: OrgId,
        user: UserId,
        from: Option<Role>,
        role: Role,
        ctx: &RequestContext,
    ) -> Result<Member> {
        let now = self.now();
        let was = from.map_or("none", Role::as_str);
        let audit = self
            .audit_event(org, now, AuditAction::MemberChanged, by, ctx)
            .with_detail(&format!("user={user} role={role} from={was}"));
        let change = RoleChange {
            org,
            user,
            role,
            from,
            by: manager,
            at: now,
        };
        self.store.set_role(&change, &audit).await
    }

    /// Removes a member from `org` and returns them (`NotFound` for someone who is not a
    /// member). Owners may remove anyone, admins plain members only, the operator anyone; the
    /// last owner is never removed (`LastOwner`). The user and the keys they created stay.
    pub async fn remove_member(
        &self,
        by: Actor,
        org: OrgId,
        user: UserId,
        ctx: &RequestContext,
    ) -> Result<Member> {
        let manager = self.member_manager(by, org).await?;
        let from = self
            .store
            .role(org, user)
            .await?
            .ok_or(Error::NotFound { resource: "member" })?;
        Self::allow_member_change(manager, Some(from), None)?;
        let now = self.now();
        let audit = self
            .audit_event(org, now, AuditAction::MemberRemoved, by, ctx)
            .with_detail(&format!("user={user} role={from}"));
        let removal = Removal {
            org,
            user,
            from,
            by: manager,
        };
        self.store
            .remove_member(&removal, &audit)
            .await?
            .ok_or(Error::NotFound { resource: "member" })
    }

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
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<Principal> {
        self.auth.authenticate(authorization, x_api_key).await
    }

    /// [`Creapic::authenticate`] for a request from `client`, whose failed authentications are
    /// limited (see [`Authenticator::authenticate_from`]).
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
    pub async fn flush_usage(&self, force: bool) -> Result<usize> {
        self.auth.flush_usage(force).await
    }

    // ----- credits -----

    async fn ledger(
        &self,
        org: OrgId,
        op: LedgerOp,
        idempotency_key: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<LedgerReceipt> {
        let at = self.now();
        let request = LedgerRequest {
            entry_id: EntryId::generate(at, self.rng.as_ref()),
            org,
            op,
            idempotency_key: IdempotencyKey::new(idempotency_key)?,
            at,
        };
        self.store.apply(&request, audit).await
    }

    /// Adds `amount` credits to `org` (the operator, or an owner).
    pub async fn grant(
        &self,
        by: Actor,
        org: OrgId,
        amount: u64,
        idempotency_key: &str,
        ctx: &RequestContext,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.require_org(org).await?;
        if let Actor::User(user) = by
            && self.store.role(org, user).await? != Some(Role::Owner)
        {
            return Err(Error::Forbidden {
                action: "grant credits",
            });
        }
        if let Actor::Key(_) = by {
            return Err(Error::Forbidden {
                action: "grant credits",
            });
        }
        let audit = self
            .audit_event(org, self.now(), AuditAction::CreditsGranted, by, ctx)
            .with_detail(&format!("amount={amount}"));
        self.ledger(
            org,
            LedgerOp::Grant { amount },
            idempotency_key,
            Some(&audit),
        )
        .await
    }

    /// Removes `amount` credits from `org`, all or nothing.
    pub async fn debit(
        &self,
        org: OrgId,
        amount: u64,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.ledger(org, LedgerOp::Debit { amount }, idempotency_key, None)
            .await
    }

    /// Moves `amount` credits of `org` into a new hold.
    pub async fn reserve(
        &self,
        org: OrgId,
        amount: u64,
        job: Option<JobId>,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.ledger(
            org,
            LedgerOp::Reserve { amount, job },
            idempotency_key,
            None,
        )
        .await
    }

    /// Makes `amount` credits of a hold final.
    pub async fn capture(
        &self,
        org: OrgId,
        hold: HoldId,
        amount: u64,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = Credits::amount(amount)?;
        self.ledger(
            org,
            LedgerOp::Capture { hold, amount },
            idempotency_key,
            None,
        )
        .await
    }

    /// Returns `amount` credits of a hold, or everything left (closing it) when `None`.
    pub async fn release(
        &self,
        org: OrgId,
        hold: HoldId,
        amount: Option<u64>,
        idempotency_key: &str,
    ) -> Result<LedgerReceipt> {
        let amount = amount.map(Credits::amount).transpose()?;
        self.ledger(
            org,
            LedgerOp::Release { hold, amount },
            idempotency_key,
            None,
        )
        .await
    }

    /// The balance of `org`.
    pub async fn balance(&self, org: OrgId) -> Result<Credits> {
        self.store.balance(org).await
    }

    /// Ledger entries of `org`, oldest first.
    pub async fn entries(
        &self,
        org: OrgId,
        after: Option<u64>,
        limit: PageLimit,
    ) -> Result<Page<LedgerEntry, u64>> {
        self.store.entries(org, after, limit).await
    }

    /// The credits of `org` in open holds (work queued or running; see [`crate::store::LedgerStore::held`]).
    /// Read after, not together with, [`Creapic::balance`]: a hold opened between the two
    /// reads shows in both or neither, never half.
    pub async fn held(&self, org: OrgId) -> Result<Credits> {
        self.store.held(org).await
    }

    /// Usage of `org` per UTC day, from the day holding `from` to the day holding `to` (both
    /// included, at most [`USAGE_DAYS_MAX`](crate::ledger::USAGE_DAYS_MAX) days): every day of
    /// the range, days without entries as zeros.
    pub async fn usage(
        &self,
        org: OrgId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(DayRange, Vec<DailyUsage>)> {
        let range = DayRange::new(from, to)?;
        let reported = self.store.usage(org, &range).await?;
        let days = range.fill(&reported);
        Ok((range, days))
    }

    // ----- jobs -----

    /// Submits a job for the key's organization, reserving its cost. Bulk jobs need
    /// `IMAGE_GENERATION`, scenes `SCENE_RENDER`.
    pub async fn submit_job(
        &self,
        principal: &Principal,
        spec: JobSpec,
        idempotency_key: &str,
    ) -> Result<Enqueued> {
        let scope = match spec.kind {
            JobKind::Bulk => Scope::ImageGeneration,
            JobKind::Scene => Scope::SceneRender,
        };
        principal.require(scope)?;
        let at = self.now();
        let new = NewJob {
            id: JobId::generate(at, self.rng.as_ref()),
            org: principal.org,
            key: Some(principal.key),
            kind: spec.kind,
            mode: principal.mode,
            inputs: spec.inputs,
            unit_cost: spec.unit_cost,
            idempotency_key: IdempotencyKey::new(idempotency_key)?,
            hold_entry: EntryId::generate(at, self.rng.as_ref()),
            at,
        };
        new.validate()?;
        self.store.enqueue(&new).await
    }

    /// A job of the key's organization; another organization's job is "not found".
    pub async fn job(&self, principal: &Principal, id: JobId) -> Result<Job> {
        if let Some(job) = self.finished_jobs.get(principal.org, id) {
            return Ok(job);
        }
        let job = self
            .store
            .job(principal.org, id)
            .await?
            .ok_or(Error::NotFound { resource: "job" })?;
        self.finished_jobs.note(&job);
        Ok(job)
    }

    /// The key's organization's jobs (bulk jobs and scene renders), oldest first, without their
    /// items. The key needs `IMAGE_GENERATION` or `SCENE_RENDER`: a summary names no prompt,
    /// so either scope may see both kinds.
    pub async fn list_jobs(
        &self,
        principal: &Principal,
        after: Option<JobId>,
        limit: PageLimit,
    ) -> Result<Page<JobSummary, JobId>> {
        if principal.require(Scope::ImageGeneration).is_err() {
            principal.require(Scope::SceneRender)?;
        }
        self.store.list_jobs(principal.org, after, limit).await
    }

    /// Cancels a job of the key's organization, refunding unfinished items.
    pub async fn cancel_job(&self, principal: &Principal, id: JobId) -> Result<Job> {
        let at = self.now();
        let entry = EntryId::generate(at, self.rng.as_ref());
        self.store.cancel_job(principal.org, id, entry, at).await
    }

    fn lease_until(&self, now: Timestamp, lease: Duration) -> Result<Timestamp> {
        if lease.is_zero() || lease > self.config.lease_max {
            return Err(Error::invalid(
                "lease",
                "must be between 1 ms and the configured maximum",
            ));
        }
        Ok(now.plus(lease))
    }

    /// Claims the next job for `worker` with a lease of `lease`.
    pub async fn claim_job(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Job>> {
        let now = self.now();
        let until = self.lease_until(now, lease)?;
        self.store.claim_job(worker, now, until).await
    }

    /// Extends `worker`'s lease on `job` to `lease` from now.
    pub async fn renew_lease(&self, job: JobId, worker: &WorkerId, lease: Duration) -> Result<Job> {
        let until = self.lease_until(self.now(), lease)?;
        self.store.renew_lease(job, worker, until).await
    }

    /// Hands `job` back: `worker` stops, and any runner may claim it at once (graceful shutdown).
    pub async fn release_lease(&self, job: JobId, worker: &WorkerId) -> Result<Job> {
        self.store.release_lease(job, worker, self.now()).await
    }

    /// Reports how an item ended; captures or releases its cost exactly once.
    pub async fn finish_item(
        &self,
        job: JobId,
        worker: &WorkerId,
        index: u32,
        outcome: ItemOutcome,
    ) -> Result<Job> {
        let at = self.now();
        let report = FinishItem {
            job,
            worker: worker.clone(),
            index,
            outcome,
            entry_id: EntryId::generate(at, self.rng.as_ref()),
            at,
        };
        report.validate()?;
        self.store.finish_item(&report).await
    }

    /// Ends a job whose items have all finished, releasing what is left of its hold.
    pub async fn complete_job(&self, job: JobId, worker: &WorkerId) -> Result<Job> {
        let at = self.now();
        let entry = EntryId::generate(at, self.rng.as_ref());
        self.store.complete_job(job, worker, entry, at).await
    }

    // ----- audit -----

    /// A page of `org`'s audit log. People must be owners or admins.
    pub async fn audit(&self, by: Actor, query: &AuditQuery) -> Result<Page<AuditRecord, u64>> {
        self.require_manager(by, query.org, "read the audit log")
            .await?;
        self.store.audit(query).await
    }

    /// Deletes audit events older than the retention period; returns how many.
    pub async fn purge_audit(&self) -> Result<u64> {
        let cutoff = self.now().minus(self.config.audit_retention);
        self.store.purge_audit_before(cutoff).await
    }

    /// Checks the whole audit log's hash chain ([`crate::audit_chain`]) page by page and reports
    /// the first edited, deleted or re-linked row. An operator's call (it reads every
    /// organization's events). The anchor is checked first: its stored event must hash to it
    /// and be older than the retention (less [`crate::audit_chain::ANCHOR_CLOCK_SKEW_MAX`]) by
    /// this service's clock, so recent rows deleted with the anchor moved past them are
    /// reported. Events appended while it runs are left for the next check; a retention purge
    /// that moves the anchor while it runs restarts the check (at most [`VERIFY_RESTARTS_MAX`]
    /// times), so a purge is never reported as a deletion.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let mut attempt = 0;
        loop {
            let head = self.store.audit_chain_head().await?;
            let anchor = self.store.audit_chain_anchor().await?;
            let mut verifier = ChainVerifier::new(head);
            verifier.check_anchor(anchor.as_ref(), self.anchor_purgeable_before());
            while verifier.wants_more() {
                let rows = self
                    .store
                    .audit_chain(verifier.cursor(), PageLimit::default())
                    .await?;
                let exhausted = rows.len() < PageLimit::default().as_usize();
                verifier.feed(&rows);
                if exhausted {
                    break;
                }
            }
            let report = verifier.finish();
            attempt += 1;
            if report.is_intact() || attempt > VERIFY_RESTARTS_MAX {
                return Ok(report);
            }
            let now = self.store.audit_chain_head().await?;
            if now.anchor_seq == head.anchor_seq {
                return Ok(report);
            }
        }
    }

    /// The time before which the anchor event must have been written: a purge run now would
    /// delete only events before `now - retention`; the skew allowance covers a purging replica
    /// whose clock runs ahead.
    fn anchor_purgeable_before(&self) -> Timestamp {
        self.now()
            .minus(self.config.audit_retention)
            .plus(crate::audit_chain::ANCHOR_CLOCK_SKEW_MAX)
    }

    // ----- generations -----

    /// Records a synchronous generation whose hold `hold` captured `tokens`: its id is the
    /// hold's ([`GenerationId::of_hold`]), its time now. Idempotent: recording a generation
    /// already recorded (a resumed attempt) returns the stored record unchanged. The hold must
    /// be a synchronous hold (no job) of `org` that captured at least `tokens`.
    pub async fn record_completed_generation(
        &self,
        org: OrgId,
        hold: HoldId,
        params: GenerationParams,
        media: String,
        tokens: Credits,
    ) -> Result<GenerationRecord> {
        self.record_generation(
            org,
            hold,
            params,
            GenerationOutcome::Completed { media, tokens },
        )
        .await
    }

    /// Records a synchronous generation that failed with the error code `code` and whose hold
    /// `hold` was released whole (nothing charged). Idempotent like
    /// [`Creapic::record_completed_generation`].
    pub async fn record_failed_generation(
        &self,
        org: OrgId,
        hold: HoldId,
        params: GenerationParams,
        code: &str,
    ) -> Result<GenerationRecord> {
        let outcome = GenerationOutcome::Failed {
            code: code.to_owned(),
        };
        self.record_generation(org, hold, params, outcome).await
    }

    async fn record_generation(
        &self,
        org: OrgId,
        hold: HoldId,
        params: GenerationParams,
        outcome: GenerationOutcome,
    ) -> Result<GenerationRecord> {
        let record = GenerationRecord {
            id: GenerationId::of_hold(hold),
            org,
            prompt: params.prompt,
            aspect_ratio: params.aspect_ratio,
            quality: params.quality,
            outcome,
            created_at: self.now(),
        };
        record.validate()?;
        // The record names the hold that paid for it: check that it did (one primary-key read),
        // so a generation id is always a hold of its organization, settled as the record says.
        let paid = self
            .store
            .hold(org, hold)
            .await?
            .ok_or(Error::NotFound { resource: "hold" })?;
        let settled = match &record.outcome {
            GenerationOutcome::Completed { tokens, .. } => paid.captured >= *tokens,
            GenerationOutcome::Failed { .. } => {
                paid.captured == Credits::ZERO && paid.remaining() == 0
            }
        };
        if paid.job.is_some() || !settled {
            return Err(Error::InvalidState(
                "a generation is recorded only for its settled synchronous hold",
            ));
        }
        self.store.insert_generation(&record).await
    }

    /// A generation of the key's organization; another organization's, or an unknown id, is
    /// "not found". No scope is checked here (the route checks its own: reading one needs
    /// `IMAGE_GENERATION`, using one as a scene layer `SCENE_RENDER`).
    pub async fn generation(
        &self,
        principal: &Principal,
        id: GenerationId,
    ) -> Result<GenerationRecord> {
        self.store
            .generation(principal.org, id)
            .await?
            .ok_or(Error::NotFound {
                resource: "generation",
            })
    }

    // ----- HTTP idempotency -----

    /// Starts a request under an `Idempotency-Key`, locking it for `lock`. A new record gets a
    /// new [`AttemptId`]; a takeover of an expired lock resumes the record's attempt.
    pub async fn begin_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        fingerprint: RequestFingerprint,
        lock: Duration,
    ) -> Result<IdempotencyBegin> {
        let now = self.now();
        let attempt = AttemptId::generate(now, self.rng.as_ref());
        self.store
            .begin_request(org, key, fingerprint, attempt, now, now.plus(lock))
            .await
    }

    /// Stores the response of a started request.
    pub async fn complete_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<()> {
        self.store
            .complete_request(org, key, response, self.now())
            .await
    }

    /// Keeps the lock of a request still running (attempt `attempt`) for another `lock`: a
    /// long request renews it, so a retry never takes over while it works, yet the lock of a
    /// request that died lapses within `lock`. `false` when the record moved on.
    pub async fn renew_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        attempt: AttemptId,
        lock: Duration,
    ) -> Result<bool> {
        let until = self.now().plus(lock);
        self.store.renew_request(org, key, attempt, until).await
    }

    /// Gives back a started request so it may be retried: as a new attempt when nothing of it
    /// is charged ([`Abandon::Settled`]), as the same attempt when that is unknown.
    pub async fn abandon_request(
        &self,
        org: OrgId,
        key: &IdempotencyKey,
        how: Abandon,
    ) -> Result<()> {
        self.store.abandon_request(org, key, how).await
    }

    /// Deletes idempotency records past their retention.
    pub async fn purge_requests(&self) -> Result<u64> {
        let cutoff = self.now().minus(self.config.idempotency_retention);
        self.store.purge_requests_before(cutoff).await
    }

    /// Gives back the credits of abandoned holds: open holds of synchronous requests (no job)
    /// older than [`CoreConfig::stale_hold_after`], whose request died between its reserve and
    /// its capture or release (a crash, a kill). Each gets what it had left released by an
    /// ordinary ledger request under the key `stale-hold:{id}`, so sweepers on several replicas
    /// release a hold once, and a request settling it meanwhile wins (the release no longer
    /// fits and is skipped). Releases at most [`STALE_HOLDS_PER_SWEEP`] holds; returns how many.
    pub async fn release_stale_holds(&self) -> Result<u64> {
        let cutoff = self.now().minus(self.config.stale_hold_after);
        let stale = self
            .store
            .stale_holds(cutoff, PageLimit::new(STALE_HOLDS_PER_SWEEP)?)
            .await?;
        let mut released = 0;
        for hold in stale {
            // Exactly what the listing saw left: if the request captured or released since,
            // the hold no longer has it and the release is refused (`InvalidState`) — a
            // request settling its own hold always wins over the sweep.
            let key = format!("stale-hold:{}", hold.id);
            match self
                .release(hold.org, hold.id, Some(hold.remaining()), &key)
                .await
            {
                Ok(receipt) if !receipt.replayed => released += 1,
                // Released by another sweep (same key), or settled meanwhile.
                Ok(_) | Err(Error::InvalidState(_) | Error::IdempotencyConflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }
}
