//! Identifiers: one newtype per kind of thing, each a UUID v7.
//!
//! UUID v7 sorts by creation time, which keeps B-tree inserts local in every backend and lets a
//! listing ordered by id read in creation order. Ids are minted from the injected [`Clock`](crate::clock::Clock) and
//! [`RandomSource`], so a seeded test produces the same ids every run. Parsing an id from
//! untrusted text is bounded and never panics.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::random::RandomSource;

/// Mints a UUID v7 for the instant `at` from 10 bytes of `rng`.
pub fn new_uuid(at: Timestamp, rng: &dyn RandomSource) -> uuid::Uuid {
    let mut bytes = [0u8; 10];
    rng.fill(&mut bytes);
    let ms = u64::try_from(at.unix_ms()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        id_type!(@derived $(#[$doc])* $name, $what);

        impl $name {
            /// Mints a new id for the instant `at`.
            pub fn generate(at: Timestamp, rng: &dyn RandomSource) -> Self {
                $name(new_uuid(at, rng))
            }
        }
    };
    // An id that is never minted on its own: it is made from another id (see `GenerationId`).
    (@derived $(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// Wraps an existing UUID (e.g. read back from a store).
            pub const fn from_uuid(id: uuid::Uuid) -> Self {
                $name(id)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }

            /// Parses the hyphenated form; anything else is [`Error::Invalid`].
            pub fn parse(text: &str) -> Result<Self> {
                // Only the 36-character hyphenated form is accepted: one canonical spelling.
                if text.len() != 36 {
                    return Err(Error::invalid($what, "must be a 36-character UUID"));
                }
                uuid::Uuid::try_parse(text)
                    .map($name)
                    .map_err(|_| Error::invalid($what, "must be a 36-character UUID"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::parse(s)
            }
        }
    };
}

id_type!(
    /// An organization.
    OrgId, "organization id"
);
id_type!(
    /// A user: a person who is a member of organizations and creates keys.
    UserId, "user id"
);
id_type!(
    /// An API key (its record, never its secret).
    KeyId, "key id"
);
id_type!(
    /// A job (bulk image job or scene render).
    JobId, "job id"
);
id_type!(
    /// A ledger entry.
    EntryId, "entry id"
);
id_type!(
    /// A credit hold. A hold's id is the id of the ledger entry that created it.
    HoldId, "hold id"
);
id_type!(
    /// An audit event.
    AuditId, "audit event id"
);
id_type!(
    /// One attempt of an HTTP request under an `Idempotency-Key`: the ledger keys the request
    /// derives carry it, so a new attempt is a new charge and a resumed one replays its charge
    /// (see [`crate::idempotency`]).
    AttemptId, "attempt id"
);

id_type!(@derived
    /// A synchronous image generation. Never minted on its own: a generation's id **is** the id
    /// of the hold that pays for it ([`GenerationId::of_hold`]), minted by the attempt's reserve.
    /// So it is unique per paid attempt, the same on an idempotent resume (the reserve replays
    /// its hold), and the ledger entries of the generation (reserve, capture or release), which
    /// carry that hold, name it.
    GenerationId, "generation id"
);

impl GenerationId {
    /// The id of the generation the hold `hold` pays for.
    pub const fn of_hold(hold: HoldId) -> Self {
        GenerationId(hold.as_uuid())
    }

    /// The hold that pays for this generation.
    pub const fn hold(self) -> HoldId {
        HoldId::from_uuid(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn ids_are_v7_sortable_and_round_trip() {
        let rng = SeededRandom::new(1);
        let a = JobId::generate(Timestamp::from_unix_ms(1_000), &rng);
        let b = JobId::generate(Timestamp::from_unix_ms(2_000), &rng);
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert_eq!(JobId::parse(&a.to_string()).ok(), Some(a));
    }

    #[test]
    fn a_generation_id_is_its_holds_id() {
        let rng = SeededRandom::new(2);
        let hold = HoldId::generate(Timestamp::from_unix_ms(5_000), &rng);
        let generation = GenerationId::of_hold(hold);
        assert_eq!(generation.as_uuid(), hold.as_uuid());
        assert_eq!(generation.hold(), hold);
        assert_eq!(generation.to_string(), hold.to_string());
        assert_eq!(
            GenerationId::parse(&generation.to_string()).ok(),
            Some(generation)
        );
    }

    #[test]
    fn bad_ids_are_invalid_not_panics() {
        for bad in [
            "",
            "x",
            "00000000000000000000000000000000",
            "{00000000-0000-0000-0000-000000000000}",
            "ééééééééééééééééééééééééééééééééé",
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        ] {
            let err = OrgId::parse(bad).err();
            assert!(
                matches!(err, Some(Error::Invalid { .. })),
                "{bad:?} gave {err:?}"
            );
        }
    }
}
