//! Users, organizations and memberships on both SQL backends: `OrgStore` for every
//! [`SqlBackend`].
//!
//! Limits and the last-owner rule are checked inside the writing transaction, after the row the
//! rule is about is locked (the user's for "organizations owned", the organization's for keys and
//! memberships), so two concurrent changes cannot both pass a check only one of them may pass.

use async_trait::async_trait;

use crate::audit::AuditEvent;
use crate::error::{Error, Result, StoreErrorKind};
use crate::id::{OrgId, UserId};
use crate::org::{Email, Member, Organization, Removal, Role, RoleChange, User};
use crate::page::{Page, PageLimit};
use crate::store::OrgStore;
use crate::store::sql::audit::insert_audit;
use crate::store::sql::backend::{Conn, SqlBackend};
use crate::store::sql::exec::{Columns, Dialect, const_sql, stmt};
use crate::store::sql::rows;

/// `OrgStore::create_org`: the organizations a user owns, counted after the user's row is
/// locked.
const OWNED_ORGS_COUNT: &str =
    "SELECT COUNT(*) AS n FROM memberships WHERE user_id = $1 AND role = 'owner'";
/// A user's role in an organization: `$1` org, `$2` user.
const MEMBER_ROLE: &str = "SELECT role FROM memberships WHERE org = $1 AND user_id = $2";
/// The organization's owners (the `memberships_owners` index).
const OWNERS_COUNT: &str =
    "SELECT COUNT(*) AS n FROM memberships WHERE org = $1 AND role = 'owner'";
/// A user row by id.
const USER_BY_ID: &str = "SELECT id, email, created_at FROM users WHERE id = $1";
/// A user row by e-mail.
const USER_BY_EMAIL: &str = "SELECT id, email, created_at FROM users WHERE email = $1";
/// Sets a role, adding the membership (joined at `$4`) when there is none.
const MEMBER_UPSERT: &str = "INSERT INTO memberships (org, user_id, role, joined_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (org, user_id) DO UPDATE SET role = excluded.role \
     RETURNING joined_at";
/// Removes a membership.
const MEMBER_DELETE: &str =
    "DELETE FROM memberships WHERE org = $1 AND user_id = $2 RETURNING joined_at";
/// `OrgStore::orgs_of_user`: `$1` user, `$2` the cursor (an organization id) or NULL, `$3` the
/// limit; served by `memberships_by_user`.
const ORGS_OF_USER: &str = "SELECT o.id, o.name, o.created_at, m.role \
     FROM memberships m JOIN orgs o ON o.id = m.org \
     WHERE m.user_id = $1 AND ($2 IS NULL OR m.org > $2) ORDER BY m.org LIMIT $3";
/// `OrgStore::members`: `$1` org, `$2` the cursor (a user id) or NULL, `$3` the limit; served by
/// the unique (org, user_id) index.
const MEMBERS_OF_ORG: &str = "SELECT u.id, u.email, u.created_at, m.role, m.joined_at \
     FROM memberships m JOIN users u ON u.id = m.user_id \
     WHERE m.org = $1 AND ($2 IS NULL OR m.user_id > $2) ORDER BY m.user_id LIMIT $3";

/// A row of [`MEMBERS_OF_ORG`].
fn member(row: &impl Columns) -> Result<Member> {
    Ok(Member {
        user: rows::user(row)?,
        role: rows::role(row)?,
        joined_at: row.opt_time("joined_at")?,
    })
}

/// Locks an organization's row until the transaction ends; `NotFound` for an unknown one.
pub(crate) async fn lock_org<B: SqlBackend>(conn: &mut Conn<B>, org: OrgId) -> Result<()> {
    let locked = stmt(const_sql!(
        "SELECT 1 AS one FROM orgs WHERE id = $1 ",
        <B::Db as Dialect>::ROW_LOCK
    ))
    .bind(org.as_uuid())
    .fetch_optional(conn)
    .await?;
    match locked {
        Some(_) => Ok(()),
        None => Err(Error::NotFound {
            resource: "organization",
        }),
    }
}

/// A user by id, on `conn`.
async fn user_by_id<B: SqlBackend>(conn: &mut Conn<B>, id: UserId) -> Result<Option<User>> {
    let row = stmt(USER_BY_ID)
        .bind(id.as_uuid())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(rows::user).transpose()
}

/// A user's role in an organization, on `conn`.
async fn role_in<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    user: UserId,
) -> Result<Option<Role>> {
    let row = stmt(MEMBER_ROLE)
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(rows::role).transpose()
}

/// The roles a membership write checks, read after the organization's row is locked: the
/// target's, the acting person's (when `by` names one) and the owner count.
async fn member_state<B: SqlBackend>(
    conn: &mut Conn<B>,
    org: OrgId,
    user: UserId,
    by: Option<UserId>,
) -> Result<(Option<Role>, Option<Role>, u64)> {
    lock_org::<B>(conn, org).await?;
    let current = role_in::<B>(conn, org, user).await?;
    let actor = match by {
        Some(by) => role_in::<B>(conn, org, by).await?,
        None => None,
    };
    let owners = stmt(OWNERS_COUNT)
        .bind(org.as_uuid())
        .fetch_one(conn)
        .await?
        .count("n")?;
    Ok((current, actor, owners))
}

#[async_trait]
impl<B: SqlBackend> OrgStore for B {
    async fn upsert_user(&self, user: &User) -> Result<User> {
        // Insert-or-nothing, then read: two concurrent upserts of one e-mail both get the row
        // that won. A duplicate id (another e-mail) is a unique violation: Conflict.
        let mut conn = self.autocommit().await?;
        let inserted = stmt(
            "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.created_at)
        .execute(&mut *conn)
        .await?;
        if inserted == 1 {
            return Ok(user.clone());
        }
        let row = stmt(USER_BY_EMAIL)
            .bind(user.email.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref()
            .map(rows::user)
            .transpose()?
            .ok_or_else(|| Error::store(StoreErrorKind::Other, "user vanished during upsert"))
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let mut conn = self.read().await?;
        user_by_id::<B>(&mut conn, id).await
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let mut conn = self.read().await?;
        let row = stmt(USER_BY_EMAIL)
            .bind(email.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn create_org(
        &self,
        org: &Organization,
        owner: UserId,
        owned_max: u64,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let user = stmt(const_sql!(
            "SELECT 1 AS one FROM users WHERE id = $1 ",
            <B::Db as Dialect>::ROW_LOCK
        ))
        .bind(owner.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if user.is_none() {
            return Err(Error::NotFound { resource: "user" });
        }
        let owned = stmt(OWNED_ORGS_COUNT)
            .bind(owner.as_uuid())
            .fetch_one(&mut *tx)
            .await?
            .count("n")?;
        if owned >= owned_max {
            return Err(Error::LimitExceeded {
                what: "organizations owned per user",
                max: owned_max,
            });
        }
        stmt("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(org.id.as_uuid())
            .bind(org.name.as_str())
            .bind(org.created_at)
            .execute(&mut *tx)
            .await?;
        // The owner's row is locked above: it exists until this commits.
        stmt(
            "INSERT INTO memberships (org, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(org.id.as_uuid())
        .bind(owner.as_uuid())
        .bind(org.created_at)
        .execute(&mut *tx)
        .await?;
        insert_audit::<B>(&mut tx, audit).await?;
        B::commit(tx).await
    }

    async fn org(&self, id: OrgId) -> Result<Option<Organization>> {
        let mut conn = self.read().await?;
        let row = stmt("SELECT id, name, created_at FROM orgs WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(rows::org).transpose()
    }

    async fn set_role(&self, change: &RoleChange, audit: &AuditEvent) -> Result<Member> {
        let mut tx = self.write().await?;
        let by = change.by.map(|(by, _)| by);
        let (current, actor, owners) =
            member_state::<B>(&mut tx, change.org, change.user, by).await?;
        let Some(user) = user_by_id::<B>(&mut tx, change.user).await? else {
            return Err(Error::NotFound { resource: "user" });
        };
        change.check(current, actor, owners)?;
        let joined = stmt(MEMBER_UPSERT)
            .bind(change.org.as_uuid())
            .bind(change.user.as_uuid())
            .bind(change.role.as_str())
            .bind(change.at)
            .fetch_one(&mut *tx)
            .await?
            .opt_time("joined_at")?;
        insert_audit::<B>(&mut tx, audit).await?;
        B::commit(tx).await?;
        Ok(Member {
            user,
            role: change.role,
            joined_at: joined,
        })
    }

    async fn remove_member(&self, removal: &Removal, audit: &AuditEvent) -> Result<Option<Member>> {
        let mut tx = self.write().await?;
        let by = removal.by.map(|(by, _)| by);
        let (current, actor, owners) =
            member_state::<B>(&mut tx, removal.org, removal.user, by).await?;
        let Some(role) = current else {
            return Ok(None);
        };
        removal.check(current, actor, owners)?;
        let Some(user) = user_by_id::<B>(&mut tx, removal.user).await? else {
            return Err(Error::NotFound { resource: "user" });
        };
        let joined = stmt(MEMBER_DELETE)
            .bind(removal.org.as_uuid())
            .bind(removal.user.as_uuid())
            .fetch_one(&mut *tx)
            .await?
            .opt_time("joined_at")?;
        insert_audit::<B>(&mut tx, audit).await?;
        B::commit(tx).await?;
        Ok(Some(Member {
            user,
            role,
            joined_at: joined,
        }))
    }

    async fn orgs_of_user(
        &self,
        user: UserId,
        after: Option<OrgId>,
        limit: PageLimit,
    ) -> Result<Page<(Organization, Role), OrgId>> {
        let mut conn = self.read().await?;
        let rows = stmt(ORGS_OF_USER)
            .bind(user.as_uuid())
            .bind(after.map(|o| o.as_uuid()))
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows
            .iter()
            .map(|row| Ok((rows::org(row)?, rows::role(row)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |(o, _)| o.id))
    }

    async fn members(
        &self,
        org: OrgId,
        after: Option<UserId>,
        limit: PageLimit,
    ) -> Result<Page<Member, UserId>> {
        let mut conn = self.read().await?;
        let rows = stmt(MEMBERS_OF_ORG)
            .bind(org.as_uuid())
            .bind(after.map(|u| u.as_uuid()))
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows.iter().map(member).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |m| m.user.id))
    }

    async fn role(&self, org: OrgId, user: UserId) -> Result<Option<Role>> {
        let mut conn = self.read().await?;
        role_in::<B>(&mut conn, org, user).await
    }

    async fn first_owner(&self, org: OrgId) -> Result<Option<UserId>> {
        let mut conn = self.read().await?;
        let row = stmt(
            "SELECT user_id FROM memberships WHERE org = $1 AND role = 'owner' \
             ORDER BY seq LIMIT 1",
        )
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| r.uuid("user_id").map(UserId::from_uuid))
            .transpose()
    }
}
