//! Organizations, users and membership roles.
//!
//! Keys belong to organizations; people belong to organizations through a [`Role`]. Only an
//! owner or admin may create or delete an organization's keys ([`Role::may_manage_keys`]) or
//! change its members ([`Role::may_change_member`]: an admin only plain members); those rules
//! live here, once, and the service layer asks them.
//!
//! Design decision: a membership write ([`RoleChange`], or a removal) carries the roles the
//! service decided on — the target's role it read (`from`) and the acting user's — and the store
//! confirms both inside its writing transaction, where it also refuses to leave the organization
//! without an owner ([`check_last_owner`]). So the decision and the write are one atomic step
//! however requests interleave.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{OrgId, UserId};
use crate::key::bounded_name;

/// Longest organization name, in characters, after trimming.
pub const ORG_NAME_MAX_CHARS: usize = 100;
/// Longest e-mail address (RFC 5321's path limit).
pub const EMAIL_MAX_LEN: usize = 254;

/// An organization's name: trimmed, 1–100 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OrgName(String);

impl OrgName {
    /// Validates and trims `text`.
    pub fn new(text: &str) -> Result<Self> {
        bounded_name(text, "name", ORG_NAME_MAX_CHARS).map(OrgName)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OrgName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for OrgName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// Its id.
    pub id: OrgId,
    /// Its name.
    pub name: OrgName,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A normalized e-mail address (trimmed, lowercased), used to identify users.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Email(String);

impl Email {
    /// Validates and normalizes `text`: one `@` with something on both sides, no whitespace or
    /// control characters, at most 254 bytes.
    pub fn new(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.len() > EMAIL_MAX_LEN {
            return Err(Error::LimitExceeded {
                what: "e-mail length",
                max: EMAIL_MAX_LEN as u64,
            });
        }
        let ok = matches!(t.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
            && !t.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(Error::invalid("email", "not an e-mail address"));
        }
        Ok(Email(t.to_lowercase()))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person who can belong to organizations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Their id.
    pub id: UserId,
    /// Their e-mail, unique across users.
    pub email: Email,
    /// When the user was first recorded.
    pub created_at: Timestamp,
}

/// A member's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Full control; the creator of the organization.
    Owner,
    /// May manage keys and members.
    Admin,
    /// May use the organization's resources: the console's playground, and keys others created.
    Member,
}

impl Role {
    /// `owner`, `admin` or `member`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses `owner`, `admin` or `member`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            _ => Err(Error::invalid("role", "expected owner, admin or member")),
        }
    }

    /// Whether this role may create and delete the organization's API keys.
    pub const fn may_manage_keys(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user's membership in an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The organization.
    pub org: OrgId,
    /// The user.
    pub user: UserId,
    /// Their role.
    pub role: Role,
}

/// A member of an organization as listed: the person, their role and when they joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user: User,
    /// Their role.
    pub role: Role,
    /// When they joined; `None` for memberships recorded before join times were kept
    /// (migration `20261201000200_members`).
    pub joined_at: Option<Timestamp>,
}

impl Role {
    /// Whether a member with this role may move another member from `from` to `to` (`None`:
    /// not a member — an addition, or a removal). Owners may do anything; admins may add,
    /// re-role and remove plain members only, and only to or from `member`: they never create,
    /// demote or remove an owner or admin; members change nothing. (Leaving an owner behind is
    /// a separate rule that binds everyone, the operator too: [`check_last_owner`].)
    pub const fn may_change_member(self, from: Option<Role>, to: Option<Role>) -> bool {
        match self {
            Role::Owner => true,
            Role::Admin => {
                matches!(from, None | Some(Role::Member)) && matches!(to, None | Some(Role::Member))
            }
            Role::Member => false,
        }
    }
}

/// A membership write as the service decided it; the store checks it in the writing
/// transaction ([`RoleChange::check`]) and writes it with its audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    /// The organization.
    pub org: OrgId,
    /// The user whose role is set.
    pub user: UserId,
    /// The role they get.
    pub role: Role,
    /// Their role as the service read it (`None`: not a member, so this adds them). Another
    /// role in the transaction refuses the write.
    pub from: Option<Role>,
    /// The acting person and their role as the service read it (`None` for the operator);
    /// another role in the transaction refuses the write.
    pub by: Option<(UserId, Role)>,
    /// When they join, if this adds them.
    pub at: Timestamp,
}

/// What the store answers when the target's role in the transaction is `current` but the
/// service decided on `from`: an addition of a member is `AlreadyMember`, a change of someone
/// no longer a member `NotFound`, another role `InvalidState` (read again and retry).
pub fn check_from(from: Option<Role>, current: Option<Role>) -> Result<()> {
    match (from, current) {
        (a, b) if a == b => Ok(()),
        (None, Some(_)) => Err(Error::AlreadyMember),
        (Some(_), None) => Err(Error::NotFound { resource: "member" }),
        _ => Err(Error::InvalidState(
            "the member's role changed meanwhile; read it again",
        )),
    }
}

/// What the store answers when the acting person's role in the transaction is `current` but
/// the service authorized them as `expected`: no longer a member, `NotFound` (the organization,
/// as for any outsider); another role, `InvalidState`.
pub fn check_actor(expected: Role, current: Option<Role>) -> Result<()> {
    match current {
        Some(role) if role == expected => Ok(()),
        Some(_) => Err(Error::InvalidState(
            "your role changed meanwhile; read it again",
        )),
        None => Err(Error::NotFound {
            resource: "organization",
        }),
    }
}

/// The rule that an organization always has an owner: taking the owner role from someone
/// (`from` owner, `to` anything else or `None` for a removal) while the organization has
/// `owners` owners, them included, is `LastOwner` when they are the only one. Stores count the
/// owners in the writing transaction, after locking the organization's row.
pub fn check_last_owner(from: Option<Role>, to: Option<Role>, owners: u64) -> Result<()> {
    if from == Some(Role::Owner) && to != Some(Role::Owner) && owners <= 1 {
        return Err(Error::LastOwner);
    }
    Ok(())
}

impl RoleChange {
    /// Every check of the writing transaction, given the target's current role, the acting
    /// person's current role and the organization's owner count.
    pub fn check(&self, current: Option<Role>, actor: Option<Role>, owners: u64) -> Result<()> {
        if let Some((_, expected)) = self.by {
            check_actor(expected, actor)?;
        }
        check_from(self.from, current)?;
        check_last_owner(self.from, Some(self.role), owners)
    }
}

/// A removal as the service decided it (see [`RoleChange`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// The organization.
    pub org: OrgId,
    /// The user removed.
    pub user: UserId,
    /// Their role as the service read it.
    pub from: Role,
    /// The acting person and their role as the service read it (`None` for the operator).
    pub by: Option<(UserId, Role)>,
}

impl Removal {
    /// Every check of the removing transaction (as [`RoleChange::check`]); a target no longer
    /// a member is `NotFound`.
    pub fn check(&self, current: Option<Role>, actor: Option<Role>, owners: u64) -> Result<()> {
        if let Some((_, expected)) = self.by {
            check_actor(expected, actor)?;
        }
        check_from(Some(self.from), current)?;
        check_last_owner(Some(self.from), None, owners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owners_and_admins_manage_keys() {
        assert!(Role::Owner.may_manage_keys());
        assert!(Role::Admin.may_manage_keys());
        assert!(!Role::Member.may_manage_keys());
        for r in [Role::Owner, Role::Admin, Role::Member] {
            assert_eq!(Role::parse(r.as_str()).ok(), Some(r));
        }
    }

    #[test]
    fn admins_change_plain_members_only() {
        use Role::{Admin, Member, Owner};
        let all = [None, Some(Owner), Some(Admin), Some(Member)];
        for from in all {
            for to in all {
                assert!(Owner.may_change_member(from, to), "{from:?} -> {to:?}");
                assert!(!Member.may_change_member(from, to), "{from:?} -> {to:?}");
                let plain = |r: Option<Role>| matches!(r, None | Some(Member));
                assert_eq!(
                    Admin.may_change_member(from, to),
                    plain(from) && plain(to),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn the_last_owner_stays() {
        use Role::{Admin, Member, Owner};
        assert!(matches!(
            check_last_owner(Some(Owner), Some(Admin), 1),
            Err(Error::LastOwner)
        ));
        assert!(matches!(
            check_last_owner(Some(Owner), None, 1),
            Err(Error::LastOwner)
        ));
        assert!(check_last_owner(Some(Owner), None, 2).is_ok());
        assert!(check_last_owner(Some(Owner), Some(Owner), 1).is_ok());
        assert!(check_last_owner(Some(Member), None, 0).is_ok());
        assert!(matches!(
            check_from(None, Some(Member)),
            Err(Error::AlreadyMember)
        ));
        assert!(matches!(
            check_from(Some(Member), None),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            check_from(Some(Member), Some(Admin)),
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            check_actor(Owner, None),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            Email::new(" Ada@Example.COM ").ok().map(|e| e.0),
            Some("ada@example.com".into())
        );
        for bad in [
            "",
            "ada",
            "@x",
            "ada@",
            "a@b@c",
            "a b@c",
            &format!("{}@x", "a".repeat(300)),
        ] {
            assert!(Email::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn org_names_are_bounded() {
        assert!(OrgName::new("Acme").is_ok());
        assert!(OrgName::new("").is_err());
        assert!(OrgName::new(&"a".repeat(101)).is_err());
    }
}
