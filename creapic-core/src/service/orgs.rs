//! Users, organizations and their members: who may add, change or remove whom.
//!
//! The rules are [`Role::may_change_member`]'s. This file finds the acting manager, checks the
//! change against those rules, and hands the store one [`RoleChange`] or [`Removal`] with its
//! audit event; the store checks the manager's role again in its transaction, because it may
//! have changed since, and never lets the last owner go.

use crate::audit::{Actor, AuditAction, RequestContext};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::id::{OrgId, UserId};
use crate::org::{Email, Member, OrgName, Organization, Removal, Role, RoleChange, User};
use crate::page::{Page, PageLimit};
use crate::scope::Scope;
use crate::store::Store;

use super::Creapic;

impl<S: Store + ?Sized> Creapic<S> {
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
}
