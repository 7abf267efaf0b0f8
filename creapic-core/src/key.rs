//! API keys: the `wi_live_`/`wi_test_` format, the secret that is shown once, its SHA-256
//! digest (the only thing a store ever sees), the 12-character display prefix, key names, and
//! the key record.
//!
//! Design decision: parsing works on borrowed bytes and hashes into a stack array, so the warm
//! verification path (headers → digest → cache lookup) allocates nothing. The plaintext lives only
//! in [`ApiKeySecret`], which zeroizes its memory on drop and never prints itself.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{KeyId, OrgId, UserId};
use crate::random::RandomSource;
use crate::scope::ScopeSet;

/// Prefix of live keys.
pub const LIVE_PREFIX: &str = "wi_live_";
/// Prefix of test-mode keys (always served by the offline renderer).
pub const TEST_PREFIX: &str = "wi_test_";
/// Total length of a key: 8 prefix characters + 64 hex characters.
pub const KEY_LEN: usize = 72;
/// Length of the display prefix shown in listings and audit logs.
pub const DISPLAY_PREFIX_LEN: usize = 12;
/// Longest header value inspected at all; longer values are rejected before any parsing.
pub const MAX_HEADER_LEN: usize = 1024;
/// Longest key name, in Unicode scalar values, after trimming.
pub const NAME_MAX_CHARS: usize = 64;

/// Whether a key is live (charges credits, uses the configured provider) or test-mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// `wi_live_…`
    Live,
    /// `wi_test_…`
    Test,
}

impl KeyMode {
    /// The key prefix of this mode.
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyMode::Live => LIVE_PREFIX,
            KeyMode::Test => TEST_PREFIX,
        }
    }

    /// `live` or `test`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }

    /// Parses `live` or `test`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "live" => Ok(KeyMode::Live),
            "test" => Ok(KeyMode::Test),
            _ => Err(Error::invalid("mode", "expected live or test")),
        }
    }
}

/// The plaintext of an API key. Exists only between generation and the response that shows it
/// once. Zeroized on drop; `Debug` and `Display` print `[REDACTED]`.
pub struct ApiKeySecret(SecretString);

impl ApiKeySecret {
    /// Wraps a key the caller already holds (e.g. read from an environment variable), after
    /// checking its format.
    pub fn new(text: String) -> Result<Self> {
        let secret = ApiKeySecret(SecretString::from(text));
        parse_key(secret.expose())?;
        Ok(secret)
    }

    /// The plaintext. Call it only to put the key in the one response or header that needs it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The key's mode.
    pub fn mode(&self) -> KeyMode {
        if self.expose().starts_with(TEST_PREFIX) {
            KeyMode::Test
        } else {
            KeyMode::Live
        }
    }

    /// The SHA-256 digest stores keep.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.expose())
    }

    /// The display prefix (first 12 characters).
    pub fn prefix(&self) -> KeyPrefix {
        KeyPrefix::of(self.expose())
    }
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret([REDACTED])")
    }
}

impl std::fmt::Display for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Generates a new key of `mode` from 32 bytes of `rng`. Returns the secret; its digest and
/// prefix are derived from it.
pub fn generate_key(mode: KeyMode, rng: &dyn RandomSource) -> ApiKeySecret {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill(raw.as_mut());
    let mut text = String::with_capacity(KEY_LEN);
    text.push_str(mode.prefix());
    let mut hex_buf = zeroize::Zeroizing::new([0u8; 64]);
    // Infallible: the output buffer is exactly twice the input length.
    if hex::encode_to_slice(raw.as_ref(), hex_buf.as_mut()).is_ok() {
        for &b in hex_buf.iter() {
            text.push(char::from(b));
        }
    }
    ApiKeySecret(SecretString::from(text))
}

/// The SHA-256 digest of a key: what stores index and compare.
///
/// Equality is constant-time (`subtle`), so comparing a presented digest with a stored one leaks
/// nothing through timing.
#[derive(Clone, Copy, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of the key text.
    pub fn of(key: &str) -> Self {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Wraps raw digest bytes (e.g. read from a store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyDigest(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out)
            .map_err(|_| Error::invalid("digest", "expected 64 hex characters"))?;
        Ok(KeyDigest(out))
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest is not a secret, but the full value is of no use in logs.
        write!(f, "KeyDigest({}…)", hex::encode(&self.0[..4]))
    }
}

/// The first 12 characters of a key (`wi_live_1a2b`): shown in listings and audit logs so people
/// can tell keys apart. Reveals 16 of the 256 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyPrefix([u8; DISPLAY_PREFIX_LEN]);

impl KeyPrefix {
    fn of(key: &str) -> Self {
        let mut out = [b'?'; DISPLAY_PREFIX_LEN];
        for (o, b) in out.iter_mut().zip(key.bytes()) {
            *o = b;
        }
        KeyPrefix(out)
    }

    /// Parses a stored prefix: the first 12 characters of a well-formed key.
    pub fn parse(text: &str) -> Result<Self> {
        let ok = text.len() == DISPLAY_PREFIX_LEN
            && (text.starts_with(LIVE_PREFIX) || text.starts_with(TEST_PREFIX))
            && is_lower_hex(&text.as_bytes()[8..]);
        if !ok {
            return Err(Error::invalid("prefix", "not a key display prefix"));
        }
        Ok(KeyPrefix::of(text))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        // Built only from ASCII key text (checked by parse_key / KeyPrefix::parse).
        std::str::from_utf8(&self.0).unwrap_or("????????????")
    }
}

impl std::fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPrefix({})", self.as_str())
    }
}

impl std::fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A presented key whose shape has been checked. Borrowed: no copy of the secret is made.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    text: &'a str,
    mode: KeyMode,
}

impl ParsedKey<'_> {
    /// The key's mode.
    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// The SHA-256 digest.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.text)
    }

    /// The display prefix.
    pub fn prefix(&self) -> KeyPrefix {
        KeyPrefix::of(self.text)
    }
}

impl std::fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedKey({}…)", self.prefix())
    }
}

/// Checks the shape of a key: `wi_live_` or `wi_test_` followed by exactly 64 lowercase hex
/// characters. Anything else is [`Error::InvalidKeyFormat`].
pub fn parse_key(text: &str) -> Result<ParsedKey<'_>> {
    if text.len() != KEY_LEN {
        return Err(Error::InvalidKeyFormat);
    }
    let mode = if text.starts_with(LIVE_PREFIX) {
        KeyMode::Live
    } else if text.starts_with(TEST_PREFIX) {
        KeyMode::Test
    } else {
        return Err(Error::InvalidKeyFormat);
    };
    if !is_lower_hex(&text.as_bytes()[8..]) {
        return Err(Error::InvalidKeyFormat);
    }
    Ok(ParsedKey { text, mode })
}

/// Whether every byte is `0-9` or `a-f`. Branch-free over the bytes (the compiler vectorizes
/// it): this runs on every request.
fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'a') < 6)
    })
}

/// Picks the credential out of the request headers, as the documents describe:
/// `Authorization: Bearer <key>` (scheme case-insensitive) or, when there is no usable
/// `Authorization` header, `x-api-key: <key>`.
///
/// Classification follows the 001 error table: no credential at all, or an `Authorization`
/// header that is not a Bearer credential (with no `x-api-key` to fall back on), is
/// [`Error::MissingAuthorization`]; a credential that is not a well-formed key is
/// [`Error::InvalidKeyFormat`].
pub fn extract_key<'a>(
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
) -> Result<ParsedKey<'a>> {
    let bearer = authorization.and_then(bearer_token);
    let raw = match (bearer, x_api_key) {
        (Some(token), _) => token,
        (None, Some(value)) => trim_ascii(value),
        (None, None) => return Err(Error::MissingAuthorization),
    };
    if raw.is_empty() {
        return Err(Error::MissingAuthorization);
    }
    if raw.len() > MAX_HEADER_LEN {
        return Err(Error::InvalidKeyFormat);
    }
    let text = std::str::from_utf8(raw).map_err(|_| Error::InvalidKeyFormat)?;
    parse_key(text)
}

/// The token of a `Bearer` credential, or `None` if the header is not one.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    if value.len() > MAX_HEADER_LEN {
        // Too long to be a key: a Bearer token whose format check will fail.
        return value
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value);
    }
    let value = trim_ascii(value);
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = trim_ascii(rest);
    (!token.is_empty()).then_some(token)
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// A key's (or organization's) display name: trimmed, 1–64 Unicode scalar values, no control
/// characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// Validates and trims `text`.
    pub fn new(text: &str) -> Result<Self> {
        bounded_name(text, "name", NAME_MAX_CHARS).map(KeyName)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trims `text` and checks it has 1..=`max_chars` characters and no control characters.
pub(crate) fn bounded_name(text: &str, field: &'static str, max_chars: usize) -> Result<String> {
    // Bound the work before counting characters of an arbitrarily long input.
    if text.len() > max_chars * 4 + 1024 {
        return Err(Error::LimitExceeded {
            what: "name length",
            max: max_chars as u64,
        });
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(Error::LimitExceeded {
            what: "name length",
            max: max_chars as u64,
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// An API key's record: everything about a key except its secret and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's id.
    pub id: KeyId,
    /// The organization the key acts for.
    pub org: OrgId,
    /// A name people chose.
    pub name: KeyName,
    /// The first 12 characters.
    pub prefix: KeyPrefix,
    /// What it may do.
    pub scopes: ScopeSet,
    /// Live or test.
    pub mode: KeyMode,
    /// When it was created.
    pub created_at: Timestamp,
    /// The user who created it (an owner or admin of `org` at the time).
    pub created_by: UserId,
    /// When it was last used, as of the last flush (accurate to the flush interval).
    pub last_used_at: Option<Timestamp>,
    /// When it was deleted; a deleted key never authenticates again.
    pub deleted_at: Option<Timestamp>,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
}

impl ApiKey {
    /// Whether the key may authenticate at `now`.
    pub fn is_usable_at(&self, now: Timestamp) -> bool {
        self.deleted_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A key record together with its digest: what a store inserts.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The record.
    pub key: ApiKey,
    /// The SHA-256 digest of the secret.
    pub digest: KeyDigest,
    /// Most active (not deleted) keys the organization may hold once this one is added: the
    /// store counts and inserts in one transaction (the organization's row locked), so
    /// concurrent creations can never exceed it. Over it: `LimitExceeded`, nothing written.
    pub active_max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    const GOOD: &str = "wi_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn classify(auth: Option<&str>, x: Option<&str>) -> std::result::Result<KeyMode, &'static str> {
        extract_key(auth.map(str::as_bytes), x.map(str::as_bytes))
            .map(|k| k.mode())
            .map_err(|e| e.code())
    }

    #[test]
    fn header_classification_follows_the_error_table() {
        let bearer = format!("Bearer {GOOD}");
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            std::result::Result<KeyMode, &'a str>,
        );
        let cases: &[Case<'_>] = &[
            (None, None, Err("missing_authorization")),
            (Some(""), None, Err("missing_authorization")),
            (Some("Bearer"), None, Err("missing_authorization")),
            (Some("Bearer    "), None, Err("missing_authorization")),
            (
                Some("Basic dXNlcjpwYXNz"),
                None,
                Err("missing_authorization"),
            ),
            (Some(GOOD), None, Err("missing_authorization")),
            (Some(&bearer), None, Ok(KeyMode::Live)),
            (
                Some(
                    "bearer  wi_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef ",
                ),
                None,
                Ok(KeyMode::Live),
            ),
            (None, Some(GOOD), Ok(KeyMode::Live)),
            (Some("Basic x"), Some(GOOD), Ok(KeyMode::Live)),
            (None, Some(""), Err("missing_authorization")),
            (Some("Bearer sk_XXXX"), None, Err("invalid_api_key_format")),
            (
                Some("Bearer wi_live_0123"),
                None,
                Err("invalid_api_key_format"),
            ),
            (
                Some(
                    "Bearer WI_LIVE_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ),
                None,
                Err("invalid_api_key_format"),
            ),
            (
                Some(
                    "Bearer wi_live_0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                ),
                None,
                Err("invalid_api_key_format"),
            ),
            (
                Some(
                    "Bearer wi_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
                ),
                None,
                Err("invalid_api_key_format"),
            ),
            (
                Some(
                    "Bearer wi_test_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ),
                None,
                Ok(KeyMode::Test),
            ),
            (
                Some(
                    "Bearer wi_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdéf",
                ),
                None,
                Err("invalid_api_key_format"),
            ),
        ];
        for (auth, x, want) in cases {
            assert_eq!(classify(*auth, *x), *want, "auth={auth:?} x={x:?}");
        }
    }

    #[test]
    fn hostile_headers_are_rejected_without_panics() {
        let huge = format!("Bearer {}", "a".repeat(100_000));
        assert_eq!(classify(Some(&huge), None), Err("invalid_api_key_format"));
        let bytes: &[u8] = b"Bearer \xff\xfe\x00";
        assert_eq!(
            extract_key(Some(bytes), None).map_err(|e| e.code()).err(),
            Some("invalid_api_key_format")
        );
        assert_eq!(
            classify(Some("Bearer 🦀"), None),
            Err("invalid_api_key_format")
        );
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let rng = SeededRandom::new(3);
        let key = generate_key(KeyMode::Live, &rng);
        let text = key.expose();
        assert_eq!(text.len(), 72);
        assert!(text.starts_with("wi_live_"));
        assert!(parse_key(text).is_ok());
        assert_eq!(key.prefix().as_str(), &text[..12]);
        assert_eq!(key.digest(), KeyDigest::of(text));
        assert_eq!(
            KeyDigest::from_hex(&key.digest().to_hex()).ok(),
            Some(key.digest())
        );
        let test = generate_key(KeyMode::Test, &rng);
        assert_eq!(test.mode(), KeyMode::Test);
        assert_ne!(test.expose()[8..], text[8..]);
    }

    #[test]
    fn secrets_never_print() {
        let key = generate_key(KeyMode::Live, &SeededRandom::new(9));
        let body = &key.expose()[8..];
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{:?}", parse_key(key.expose())),
        ] {
            assert!(!shown.contains(body), "{shown}");
        }
        assert!(ApiKeySecret::new("nope".into()).is_err());
    }

    #[test]
    fn digest_matches_sha256_of_the_text() {
        // Known answer: SHA-256("abc").
        assert_eq!(
            KeyDigest::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_trimmed_bounded_unicode() {
        assert_eq!(
            KeyName::new("  Production ").map(|n| n.0).ok(),
            Some("Production".into())
        );
        assert!(KeyName::new("   ").is_err());
        assert!(KeyName::new(&"é".repeat(64)).is_ok());
        assert!(KeyName::new(&"é".repeat(65)).is_err());
        assert!(KeyName::new("日本語のキー 🔑").is_ok());
        assert!(KeyName::new("line\nbreak").is_err());
        assert!(KeyName::new(&"x".repeat(1_000_000)).is_err());
    }
}
