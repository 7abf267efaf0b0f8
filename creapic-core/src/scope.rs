//! Scopes: what an API key may do, as a [`Scope`] and a non-empty [`ScopeSet`].
//!
//! A `ScopeSet` is a bit set in one byte, `Copy`, so the authorization check on the hot path is a
//! mask test with no allocation. The serialized names (`IMAGE_GENERATION`, `SCENE_RENDER`,
//! `ORGANIZATION_WRITE`) are exactly those of the public API document and never change.

use crate::error::{Error, Result};

/// One permission a key can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// `POST /api/public/images/generate` and the bulk image jobs.
    ImageGeneration,
    /// `POST /api/public/scenes/render` and polling renders.
    SceneRender,
    /// `POST /api/public/organizations/create`.
    OrganizationWrite,
}

impl Scope {
    /// Every scope, in bit order.
    pub const ALL: [Scope; 3] = [
        Scope::ImageGeneration,
        Scope::SceneRender,
        Scope::OrganizationWrite,
    ];

    /// The wire name, e.g. `IMAGE_GENERATION`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::ImageGeneration => "IMAGE_GENERATION",
            Scope::SceneRender => "SCENE_RENDER",
            Scope::OrganizationWrite => "ORGANIZATION_WRITE",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::ImageGeneration => 1,
            Scope::SceneRender => 2,
            Scope::OrganizationWrite => 4,
        }
    }

    /// Parses a wire name. Exact and case-sensitive: one spelling per scope.
    pub fn parse(name: &str) -> Result<Self> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                let shown: String = name.chars().take(40).collect();
                Error::invalid(
                    "scopes",
                    format!(
                        "unknown scope {shown:?} (expected IMAGE_GENERATION, SCENE_RENDER or ORGANIZATION_WRITE)"
                    ),
                )
            })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Scope::parse(s)
    }
}

/// A non-empty set of scopes.
///
/// Invariant: at least one bit is set, and only bits of known scopes. Built only through
/// [`ScopeSet::new`], [`ScopeSet::from_bits`] or [`ScopeSet::parse_list`], which enforce it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeSet(u8);

impl ScopeSet {
    const KNOWN: u8 = 0b111;

    /// A set of the given scopes; an empty input is [`Error::Invalid`].
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Result<Self> {
        let bits = scopes.into_iter().fold(0u8, |acc, s| acc | s.bit());
        ScopeSet::from_bits(bits)
    }

    /// Every scope.
    pub const fn all() -> Self {
        ScopeSet(Self::KNOWN)
    }

    /// A set with just `scope`.
    pub const fn only(scope: Scope) -> Self {
        ScopeSet(scope.bit())
    }

    /// Rebuilds a set from [`ScopeSet::bits`] (e.g. read from a store).
    pub fn from_bits(bits: u8) -> Result<Self> {
        if bits == 0 {
            return Err(Error::invalid("scopes", "a key needs at least one scope"));
        }
        if bits & !Self::KNOWN != 0 {
            return Err(Error::invalid("scopes", "unknown scope bits"));
        }
        Ok(ScopeSet(bits))
    }

    /// Parses a comma-separated list such as `IMAGE_GENERATION,SCENE_RENDER` (spaces allowed
    /// around names, duplicates collapse).
    pub fn parse_list(list: &str) -> Result<Self> {
        if list.len() > 256 {
            return Err(Error::LimitExceeded {
                what: "scope list length",
                max: 256,
            });
        }
        let scopes = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Scope::parse)
            .collect::<Result<Vec<_>>>()?;
        ScopeSet::new(scopes)
    }

    /// The bit representation, stable across releases (for stores).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether `scope` is in the set.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl std::fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exactly_the_documents() {
        let names: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["IMAGE_GENERATION", "SCENE_RENDER", "ORGANIZATION_WRITE"]
        );
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()).ok(), Some(s));
        }
        assert!(Scope::parse("image_generation").is_err());
    }

    #[test]
    fn sets_are_non_empty_and_round_trip() {
        assert!(ScopeSet::new([]).is_err());
        assert!(ScopeSet::parse_list(" , ").is_err());
        assert!(ScopeSet::from_bits(8).is_err());
        let set = ScopeSet::parse_list("SCENE_RENDER, IMAGE_GENERATION,SCENE_RENDER");
        let set = set.expect("valid list");
        assert!(set.contains(Scope::SceneRender) && set.contains(Scope::ImageGeneration));
        assert!(!set.contains(Scope::OrganizationWrite));
        assert_eq!(set.to_string(), "IMAGE_GENERATION,SCENE_RENDER");
        assert_eq!(ScopeSet::from_bits(set.bits()).ok(), Some(set));
        assert!(ScopeSet::parse_list(&"A,".repeat(200)).is_err());
    }
}
