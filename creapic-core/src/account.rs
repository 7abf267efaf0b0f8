//! Console accounts: passwords and sign-in sessions of the people who use the console.
//!
//! Design decisions:
//! - **Passwords** are hashed with Argon2id (the `argon2` crate's defaults: v19, 19 MiB, two
//!   passes, one lane — OWASP's recommendation) into a PHC string, salted from the injected
//!   [`RandomSource`]. A password is 10 to [`PASSWORD_MAX_BYTES`] bytes: the upper bound keeps a
//!   hash's cost bounded whatever an attacker sends.
//! - **Sessions** are server-side. The browser holds a [`SessionToken`] (32 random bytes, hex);
//!   stores keep only its SHA-256 digest ([`SessionDigest`]), exactly as for API keys, so a copy
//!   of the database signs no one in. A session ends at the first of: sign-out, its idle timeout,
//!   its absolute lifetime ([`SessionPolicy`]).
//! - **CSRF tokens** are derived from the session token ([`SessionToken::csrf`]): a form carries
//!   it, the server recomputes and compares in constant time. Only the holder of the cookie can
//!   compute it, and nothing extra is stored.

use std::fmt;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::UserId;
use crate::random::RandomSource;

/// Fewest characters a password may have.
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Most bytes a password may have: Argon2 reads every byte, so this bounds a sign-in's cost.
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Most bytes of a stored hash (a PHC string is about 100).
pub const PASSWORD_HASH_MAX_BYTES: usize = 512;

/// A password as typed: never printed, wiped from memory when dropped.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Checks the length rules (10 characters to [`PASSWORD_MAX_BYTES`] bytes).
    pub fn new(text: impl Into<String>) -> Result<Self> {
        let text = Zeroizing::new(text.into());
        if text.chars().count() < PASSWORD_MIN_CHARS {
            return Err(Error::invalid(
                "password",
                format!("must have at least {PASSWORD_MIN_CHARS} characters"),
            ));
        }
        if text.len() > PASSWORD_MAX_BYTES {
            return Err(Error::invalid(
                "password",
                format!("must have at most {PASSWORD_MAX_BYTES} bytes"),
            ));
        }
        Ok(Password(text))
    }

    /// A password as presented at sign-in: only the upper bound is checked (a stored password
    /// met the rules when it was set; a shorter one simply does not match).
    pub fn presented(text: impl Into<String>) -> Result<Self> {
        let text = Zeroizing::new(text.into());
        if text.len() > PASSWORD_MAX_BYTES {
            return Err(Error::invalid(
                "password",
                format!("must have at most {PASSWORD_MAX_BYTES} bytes"),
            ));
        }
        Ok(Password(text))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// An Argon2id hash of a password, as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password` with a fresh 16-byte salt from `rng`.
    pub fn of(password: &Password, rng: &dyn RandomSource) -> Result<Self> {
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let hash = Argon2::default()
            .hash_password_with_salt(password.bytes(), &salt)
            .map_err(|e| Error::invalid("password", format!("cannot be hashed: {e}")))?;
        Ok(PasswordHash(hash.to_string()))
    }

    /// Wraps a stored PHC string (checked when it is verified against).
    pub fn from_phc(text: &str) -> Result<Self> {
        if text.is_empty() || text.len() > PASSWORD_HASH_MAX_BYTES || !text.starts_with('$') {
            return Err(Error::invalid("password hash", "not a PHC string"));
        }
        Ok(PasswordHash(text.to_owned()))
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` is the one hashed here. Argon2 compares in constant time; a stored
    /// hash that does not parse matches nothing.
    pub fn verify(&self, password: &Password) -> bool {
        Argon2::default()
            .verify_password(password.bytes(), self.0.as_str())
            .is_ok()
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// The secret a browser holds for its session (in an HttpOnly cookie): 64 hex characters.
/// It exists only in the response that signs the person in and in the cookie.
#[derive(Clone)]
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// A fresh token: 32 bytes from `rng`.
    pub fn generate(rng: &dyn RandomSource) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill(bytes.as_mut());
        SessionToken(Zeroizing::new(hex::encode(bytes.as_ref())))
    }

    /// A token as presented (a cookie): exactly 64 lowercase hex characters, or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| SessionToken(Zeroizing::new(text.to_owned())))
    }

    /// The text to put in the cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What stores keep.
    pub fn digest(&self) -> SessionDigest {
        SessionDigest(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The CSRF token of this session: forms carry it, [`SessionToken::check_csrf`] verifies.
    pub fn csrf(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"creapic csrf v1\0");
        h.update(self.0.as_bytes());
        hex::encode(h.finalize())
    }

    /// Whether `presented` is this session's CSRF token (constant-time).
    pub fn check_csrf(&self, presented: &str) -> bool {
        let expected = self.csrf();
        expected.len() == presented.len()
            && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// The SHA-256 digest of a [`SessionToken`]: all a store ever sees. Equality is constant-time.
#[derive(Clone, Copy, Eq)]
pub struct SessionDigest([u8; 32]);

impl SessionDigest {
    /// Wraps raw digest bytes (e.g. read from a store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionDigest(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for SessionDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for SessionDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for SessionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionDigest({}…)", &hex::encode(&self.0[..4]))
    }
}

/// A signed-in session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The digest of its token.
    pub digest: SessionDigest,
    /// Who is signed in.
    pub user: UserId,
    /// When it started.
    pub created_at: Timestamp,
    /// When it was last used (moved forward at most once per [`SessionPolicy::touch_every`]).
    pub last_seen_at: Timestamp,
    /// When it ends whatever happens (its absolute lifetime).
    pub expires_at: Timestamp,
}

impl Session {
    /// Whether it is still valid at `now` under `policy`.
    pub fn is_live(&self, now: Timestamp, policy: &SessionPolicy) -> bool {
        now < self.expires_at && now < self.last_seen_at.plus(policy.idle)
    }
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after it started, used or not.
    pub absolute: Duration,
    /// `last_seen_at` is written at most this often per session (a write per page view would
    /// make every click a database write).
    pub touch_every: Duration,
    /// Most live sessions per person: signing in once more ends the oldest.
    pub per_user_max: u32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(2 * 60 * 60),
            absolute: Duration::from_secs(24 * 60 * 60),
            touch_every: Duration::from_secs(60),
            per_user_max: 20,
        }
    }
}

/// The hash every sign-in of an unknown e-mail is verified against, so that an unknown address
/// costs the same time as a wrong password (no account enumeration by timing). It matches no
/// password anyone can type: its salt and output are fixed, its password unknown.
pub(crate) const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Y3JlYXBpYy1kZWNveS1zYWx0$\
     1SVEXFm0cJ2i9VvV0WkyB4d3mC1JxHc2yJrZ8nHLl6E";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let pw = Password::new("correct horse battery").unwrap();
        let hash = PasswordHash::of(&pw, &OsRandom).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$"));
        assert!(hash.verify(&Password::presented("correct horse battery").unwrap()));
        assert!(!hash.verify(&Password::presented("correct horse batterz").unwrap()));
        let again = PasswordHash::of(&pw, &OsRandom).unwrap();
        assert_ne!(hash, again, "each hash has its own salt");
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::new("short").is_err());
        assert!(Password::new("x".repeat(PASSWORD_MAX_BYTES + 1)).is_err());
        assert!(Password::presented("x".repeat(PASSWORD_MAX_BYTES + 1)).is_err());
        let pw = Password::new("a long enough secret").unwrap();
        assert_eq!(format!("{pw:?}"), "Password(..)");
    }

    #[test]
    fn the_decoy_hash_parses_and_matches_nothing_typed() {
        // It must parse as a real Argon2id hash, or verifying against it would return at once
        // and an unknown e-mail would answer faster than a wrong password.
        let parsed = argon2::password_hash::phc::PasswordHash::new(DECOY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.hash.map(|h| h.len()), Some(32));
        let decoy = PasswordHash::from_phc(DECOY_HASH).unwrap();
        assert!(!decoy.verify(&Password::presented("").unwrap()));
        assert!(!decoy.verify(&Password::presented("password1234").unwrap()));
    }

    #[test]
    fn session_tokens_parse_strictly_and_derive_their_csrf_token() {
        let t = SessionToken::generate(&OsRandom);
        assert_eq!(t.expose().len(), 64);
        let back = SessionToken::parse(t.expose()).unwrap();
        assert!(back.digest() == t.digest());
        assert!(SessionToken::parse("ABC").is_none());
        assert!(SessionToken::parse(&"G".repeat(64)).is_none());
        assert!(t.check_csrf(&t.csrf()));
        let other = SessionToken::generate(&OsRandom);
        assert!(!t.check_csrf(&other.csrf()));
        assert!(!t.check_csrf(""));
    }

    #[test]
    fn sessions_end_idle_or_at_their_absolute_lifetime() {
        let policy = SessionPolicy::default();
        let t0 = Timestamp::from_unix_ms(1_000_000);
        let s = Session {
            digest: SessionDigest::from_bytes([1; 32]),
            user: UserId::from_uuid(uuid::Uuid::nil()),
            created_at: t0,
            last_seen_at: t0,
            expires_at: t0.plus(policy.absolute),
        };
        assert!(s.is_live(t0, &policy));
        assert!(!s.is_live(t0.plus(policy.idle), &policy));
        let busy = Session {
            last_seen_at: t0.plus(policy.absolute - Duration::from_secs(1)),
            ..s.clone()
        };
        assert!(!busy.is_live(t0.plus(policy.absolute), &policy));
    }
}
