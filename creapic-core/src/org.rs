//! Organizations, users and membership roles.
//!
//! Keys belong to organizations; people belong to organizations through a [`Role`]. Only an
//! owner or admin may create or delete an organization's keys ([`Role::may_manage_keys`]); that
//! rule lives here, once, and the service layer asks it.

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
    /// May use the organization's resources through keys others created.
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
