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
//! Work that is paid for — jobs, synchronous generations — is submitted by a [`Caller`]: a key,
//! or a person acting for an organization they belong to (the console's playground), checked by
//! [`Creapic::check_caller`].
//!
//! The methods are split by concern, one `impl Creapic` block per file: `accounts` (console
//! passwords and sessions), `orgs` (users,
//! organizations, members), `keys` (keys, authentication, the last-used flush), `ledger` (credits
//! and the stale-hold sweep), `jobs`, `audit`, `generations` and `idempotency` (HTTP idempotency
//! records). This file keeps the configuration, the builder, the struct and the private helpers
//! they all use (`now`, `audit_event`, `check_caller`, `require_org`, `require_manager`).
//!
//! [`Principal`]: crate::auth::Principal
//! [`Caller`]: crate::caller::Caller

mod accounts;
mod audit;
mod generations;
mod idempotency;
mod jobs;
mod keys;
mod ledger;
mod orgs;

pub use audit::VERIFY_RESTARTS_MAX;
pub use jobs::JobSpec;
pub use keys::{CreatedKey, KeySpec};
pub use ledger::{LEDGER_CHECK_PAGES_MAX, STALE_HOLDS_PER_SWEEP};

use std::sync::Arc;
use std::time::Duration;

use crate::account::SessionPolicy;
use crate::audit::{Actor, AuditAction, AuditEvent, RequestContext};
use crate::auth::{AuthConfig, Authenticator};
use crate::caller::Caller;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::{Error, Result};
use crate::finished_jobs::FinishedJobs;
use crate::id::{AuditId, OrgId};
use crate::org::Organization;
use crate::random::{OsRandom, RandomSource};
use crate::store::Store;

/// Default [`CoreConfig::stale_hold_after`]: 15 minutes, several times the longest provider call
/// with its retries.
pub const STALE_HOLD_AFTER: Duration = Duration::from_secs(15 * 60);

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
    /// How long console sessions last, and how many one person may hold.
    pub sessions: SessionPolicy,
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
            sessions: SessionPolicy::default(),
        }
    }
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

    /// Checks that `caller` may act for its organization at all: a key may (its scopes are each
    /// operation's business, unchanged); a person must be a member of the organization, in any
    /// role, else the organization does not exist for them (`NotFound`). One store read for a
    /// person, none for a key.
    pub async fn check_caller(&self, caller: &Caller) -> Result<()> {
        match caller {
            Caller::Key(_) => Ok(()),
            Caller::Member { user, org } => match self.store.role(*org, *user).await? {
                Some(_) => Ok(()),
                None => Err(Error::NotFound {
                    resource: "organization",
                }),
            },
        }
    }

    async fn require_org(&self, org: OrgId) -> Result<Organization> {
        self.store.org(org).await?.ok_or(Error::NotFound {
            resource: "organization",
        })
    }

    /// Checks that `by` may manage the keys of `org`. People need owner or admin; a person
    /// outside the organization is told the organization does not exist.
    /// How many of this build's migrations the store lacks (0: ready to serve); an unreachable
    /// store is an `Unavailable` error. For readiness probes.
    pub async fn pending_migrations(&self) -> Result<u32> {
        self.store.pending_migrations().await
    }

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
}
