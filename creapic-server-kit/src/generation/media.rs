//! Media storage: generated images, scene layers and composed prompts, per organization, over
//! [`object_store`], with signed, expiring links for serving.
//!
//! The design decision that shapes it: **objects are content-addressed inside an organization's
//! own namespace** (`orgs/{org}/{sha256}.{ext}`). Content addressing makes every write idempotent
//! (a runner that retries an item after a crash writes the same object again, harmlessly) and
//! makes a [`MediaKey`] unguessable without the bytes. Keeping the namespace per organization,
//! rather than deduplicating across organizations, means one organization can never learn
//! whether another holds some image, and a key alone never reaches across tenants: every read
//! names the organization, and a signed link binds organization, key and expiry under one HMAC.
//!
//! Backends: the local filesystem under the data directory (the default), an in-memory store (for
//! tests), and S3-compatible stores by URL (`s3://bucket/prefix`, cargo feature `s3`) so that
//! several replicas share one media store.
//!
//! Two more namespaces keep storage bounded:
//! - **Uploads** (`uploads/{org}/{upload}/{sha256}.{ext}`): a scene's inline layers, staged per
//!   request ([`UploadId`]) only *after* the render's credits are reserved, read by the render
//!   and deleted when it is done ([`MediaStore::delete_uploads`]). They are never shared with
//!   another request, so deleting them never breaks anything else, and [`MediaStore::sweep_uploads`]
//!   removes what a crash left behind.
//! - **A quota** per organization ([`MediaStore::with_quota`]): a write that would take an
//!   organization past it is refused with `limit_exceeded` (422). Usage is read from the store
//!   by listing the organization's objects at most once per [`USAGE_TTL`] and kept up to date
//!   with this process's own writes, so replicas may together overshoot by what they wrote
//!   within one TTL.
//!
//! Error bodies never carry object paths or store messages: those go to the log, the body says
//! which operation failed.

use std::sync::Arc;

use bytes::Bytes;
use creapic_core::clock::Timestamp;
use creapic_core::id::OrgId;
use creapic_core::random::{OsRandom, RandomSource};
use hmac::{Hmac, KeyInit, Mac};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use crate::generation::Error;

/// Largest object stored or read, in bytes (a 4K PNG is well under this).
pub const OBJECT_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Shortest accepted signing key, in bytes.
pub const SIGNING_KEY_MIN_BYTES: usize = 32;
/// Longest lifetime a signed link may have.
pub const LINK_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// How long a quota usage figure read from the store is trusted.
pub const USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most organizations whose usage is remembered at once (beyond, the oldest is forgotten).
pub const USAGE_ORGS_MAX: usize = 10_000;
/// Most objects one call of [`MediaStore::sweep_uploads`] or [`MediaStore::delete_uploads`]
/// deletes, and most objects listed to measure one organization's usage.
pub const LIST_MAX: usize = 100_000;

type HmacSha256 = Hmac<Sha256>;

/// What kind of object a [`MediaKey`] names. The kind is part of the key (its extension), so the
/// content type served for an object never depends on anything but its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaType {
    /// `image/png`
    Png,
    /// `image/jpeg`
    Jpeg,
    /// `image/webp`
    Webp,
    /// `application/json` (composed prompts)
    Json,
}

impl MediaType {
    /// The MIME type.
    pub const fn mime(self) -> &'static str {
        match self {
            MediaType::Png => "image/png",
            MediaType::Jpeg => "image/jpeg",
            MediaType::Webp => "image/webp",
            MediaType::Json => "application/json",
        }
    }

    /// The file extension used in keys.
    pub const fn extension(self) -> &'static str {
        match self {
            MediaType::Png => "png",
            MediaType::Jpeg => "jpg",
            MediaType::Webp => "webp",
            MediaType::Json => "json",
        }
    }

    /// Parses a MIME type (`image/png`, …); parameters after `;` are ignored.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let base = mime.split(';').next().unwrap_or("").trim();
        [
            MediaType::Png,
            MediaType::Jpeg,
            MediaType::Webp,
            MediaType::Json,
        ]
        .into_iter()
        .find(|t| t.mime().eq_ignore_ascii_case(base))
    }

    fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "png" => Some(MediaType::Png),
            "jpg" => Some(MediaType::Jpeg),
            "webp" => Some(MediaType::Webp),
            "json" => Some(MediaType::Json),
            _ => None,
        }
    }

    /// The image type of `bytes`, by their magic number.
    pub fn sniff_image(bytes: &[u8]) -> Option<Self> {
        match image::guess_format(bytes).ok()? {
            image::ImageFormat::Png => Some(MediaType::Png),
            image::ImageFormat::Jpeg => Some(MediaType::Jpeg),
            image::ImageFormat::WebP => Some(MediaType::Webp),
            _ => None,
        }
    }
}

/// The name of a stored object inside its organization: 64 lowercase hex digits of the SHA-256
/// of its bytes, a dot and an extension (`3f…a9.png`). Validated on construction, so a key can
/// never carry a path separator or traversal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaKey {
    text: String,
    kind: MediaType,
}

impl MediaKey {
    /// The key of `bytes` stored as `kind`.
    pub fn of(bytes: &[u8], kind: MediaType) -> Self {
        let digest = hex::encode(Sha256::digest(bytes));
        MediaKey {
            text: format!("{digest}.{}", kind.extension()),
            kind,
        }
    }

    /// Parses and validates a key.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidParameter {
            name: "media key",
            message: "expected 64 lowercase hex digits and a known extension".into(),
        };
        let (digest, ext) = text.split_once('.').ok_or_else(invalid)?;
        let hex_ok = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let kind = MediaType::from_extension(ext).ok_or_else(invalid)?;
        if !hex_ok {
            return Err(invalid());
        }
        Ok(MediaKey {
            text: text.to_owned(),
            kind,
        })
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What kind of object it names.
    pub fn media_type(&self) -> MediaType {
        self.kind
    }
}

impl std::fmt::Display for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for MediaKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for MediaKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MediaKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The secret that signs media links. At least [`SIGNING_KEY_MIN_BYTES`] bytes; `Debug` never
/// shows it.
#[derive(Clone)]
pub struct SigningKey(Arc<SecretSlice<u8>>);

impl SigningKey {
    /// A key from bytes the host keeps (so that links stay valid across restarts and replicas).
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() < SIGNING_KEY_MIN_BYTES {
            return Err(Error::Media {
                message: format!(
                    "the signing key must have at least {SIGNING_KEY_MIN_BYTES} bytes"
                ),
            });
        }
        Ok(SigningKey(Arc::new(SecretSlice::from(bytes))))
    }

    /// A fresh random key (links then die with the process: fine for tests and single runs).
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        OsRandom.fill(&mut bytes);
        SigningKey(Arc::new(SecretSlice::from(bytes)))
    }

    /// A 32-byte key for `purpose`, derived from this one (HMAC-SHA256 of a labelled purpose):
    /// secrets every replica must share (the console's CSRF key) follow the signing key without
    /// a setting of their own, and reveal nothing about it.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"creapic derived key v1\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; the error arm cannot happen.
        HmacSha256::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// A signed, expiring link to one object of one organization. The HTTP layer serves
/// `GET {prefix}/{org}/{key}?expires={expires}&sig={signature}` and checks it with
/// [`MediaStore::verify`] before reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLink {
    /// The organization.
    pub org: OrgId,
    /// The object.
    pub key: MediaKey,
    /// When it stops working, in seconds since the Unix epoch.
    pub expires: i64,
    /// base64url (no padding) of HMAC-SHA256 over `v1`, the organization, the key and `expires`.
    pub signature: String,
}

impl SignedLink {
    /// `{prefix}/{org}/{key}?expires=…&sig=…` (the prefix without a trailing slash, e.g.
    /// `https://api.example.com/api/media`).
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "{}/{}/{}?expires={}&sig={}",
            prefix.trim_end_matches('/'),
            self.org,
            self.key,
            self.expires,
            self.signature
        )
    }
}

/// An object read back.
#[derive(Debug, Clone)]
pub struct Media {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its type (from its key).
    pub media_type: MediaType,
}

/// The staging area of one request's uploads: 32 lowercase hex digits, derived from what
/// identifies the request (its ledger key), so a retry of the same attempt writes the same
/// objects again and a new attempt writes its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// The upload area of the request identified by `request` (e.g. its ledger key).
    pub fn for_request(request: &str) -> Self {
        let digest = Sha256::digest(request.as_bytes());
        UploadId(hex::encode(&digest[..16]))
    }

    /// Parses and validates an id.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let ok = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(UploadId(text.to_owned()))
        } else {
            Err(Error::InvalidParameter {
                name: "upload id",
                message: "expected 32 lowercase hex digits".into(),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for UploadId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for UploadId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UploadId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An organization's measured usage: bytes, and when they were read from the store.
#[derive(Debug, Clone, Copy)]
struct Usage {
    bytes: u64,
    read_at: std::time::Instant,
}

/// Per-organization, content-addressed media storage with signed links.
#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    /// Where inside the store creapic's objects live (empty for the root).
    prefix: ObjectPath,
    signing: SigningKey,
    /// Most bytes one organization may hold (objects and uploads); `None`: unlimited.
    quota: Option<u64>,
    usage: Arc<std::sync::Mutex<std::collections::HashMap<OrgId, Usage>>>,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .finish_non_exhaustive()
    }
}

fn media_error(e: impl std::fmt::Display) -> Error {
    Error::Media {
        message: e.to_string(),
    }
}

/// A failure of the object store while serving a request: the detail (paths, the store's own
/// message) goes to the log, the error — and so the response body — names only the operation.
fn storage_error(op: &'static str, e: impl std::fmt::Display) -> Error {
    tracing::warn!(operation = op, error = %e, "media storage failed");
    Error::Media {
        message: format!("could not {op} an object"),
    }
}

impl MediaStore {
    /// A key for `purpose` derived from the signing key ([`SigningKey::derive`]).
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        self.signing.derive(purpose)
    }

    /// Over any object store, with objects under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, signing: SigningKey) -> Self {
        MediaStore {
            store,
            prefix: ObjectPath::from(prefix),
            signing,
            quota: None,
            usage: Arc::default(),
        }
    }

    /// Limits each organization to `bytes` of stored media (generated images and uploads).
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota = Some(bytes);
        self
    }

    /// The per-organization quota, if any.
    pub fn quota(&self) -> Option<u64> {
        self.quota
    }

    /// On the local filesystem under `dir` (created if missing): the default.
    pub fn local(dir: impl AsRef<std::path::Path>, signing: SigningKey) -> Result<Self, Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(media_error)?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(media_error)?
            .with_automatic_cleanup(true);
        Ok(MediaStore::new(Arc::new(fs), "", signing))
    }

    /// In memory: for tests and throwaway runs.
    pub fn in_memory(signing: SigningKey) -> Self {
        MediaStore::new(Arc::new(object_store::memory::InMemory::new()), "", signing)
    }

    /// By URL: `file:///var/lib/creapic/media`, `memory://`, or (feature `s3`)
    /// `s3://bucket/prefix`, configured from the standard `AWS_*` variables in `options`
    /// (e.g. `aws_endpoint` for S3-compatible servers, `aws_region`, credentials).
    pub fn from_url<I, K, V>(url: &str, options: I, signing: SigningKey) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let parsed = url::Url::parse(url).map_err(media_error)?;
        if parsed.scheme() == "file" {
            let path = parsed
                .to_file_path()
                .map_err(|()| media_error("not a local path"))?;
            return MediaStore::local(path, signing);
        }
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options).map_err(media_error)?;
        Ok(MediaStore {
            store: Arc::from(store),
            prefix,
            signing,
            quota: None,
            usage: Arc::default(),
        })
    }

    /// The store path of `parts` under the configured prefix.
    fn path_of<'a>(&'a self, parts: impl IntoIterator<Item = &'a str>) -> ObjectPath {
        let mut all: Vec<&str> = self.prefix.as_ref().split('/').collect();
        all.retain(|p| !p.is_empty());
        all.extend(parts);
        ObjectPath::from_iter(all)
    }

    fn path(&self, org: OrgId, key: &MediaKey) -> ObjectPath {
        let org = org.to_string();
        self.path_of(["orgs", org.as_str(), key.as_str()])
    }

    fn upload_path(&self, org: OrgId, upload: &UploadId, key: &MediaKey) -> ObjectPath {
        let org = org.to_string();
        self.path_of(["uploads", org.as_str(), upload.as_str(), key.as_str()])
    }

    /// Stores `bytes` for `org` and returns its key. Idempotent: the same bytes give the same key
    /// and rewriting them changes nothing. Refused with `limit_exceeded` when it would take
    /// `org` past its quota.
    pub async fn put(&self, org: OrgId, bytes: Bytes, kind: MediaType) -> Result<MediaKey, Error> {
        let key = MediaKey::of(&bytes, kind);
        let path = self.path(org, &key);
        self.write(org, path, bytes).await?;
        Ok(key)
    }

    /// Stages `bytes` as an upload of request `upload` for `org` (a scene's inline layer).
    pub async fn put_upload(
        &self,
        org: OrgId,
        upload: &UploadId,
        bytes: Bytes,
        kind: MediaType,
    ) -> Result<MediaKey, Error> {
        let key = MediaKey::of(&bytes, kind);
        let path = self.upload_path(org, upload, &key);
        self.write(org, path, bytes).await?;
        Ok(key)
    }

    async fn write(&self, org: OrgId, path: ObjectPath, bytes: Bytes) -> Result<(), Error> {
        if bytes.len() > OBJECT_MAX_BYTES {
            return Err(Error::BodyTooLarge {
                max: OBJECT_MAX_BYTES,
            });
        }
        let size = bytes.len() as u64;
        self.check_quota(org, size).await?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| storage_error("write", e))?;
        self.add_usage(org, size);
        Ok(())
    }

    /// Refuses (`limit_exceeded`, 422) when `org` holding `incoming` more bytes would exceed its
    /// quota. Cheap when the usage was read within [`USAGE_TTL`]; otherwise lists the
    /// organization's objects once. Callers may check before doing paid work.
    pub async fn check_quota(&self, org: OrgId, incoming: u64) -> Result<(), Error> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let used = self.usage_of(org).await?;
        if used.saturating_add(incoming) > quota {
            return Err(creapic_core::Error::LimitExceeded {
                what: "media bytes per organization",
                max: quota,
            }
            .into());
        }
        Ok(())
    }

    /// Bytes `org` holds: its objects and its staged uploads.
    pub async fn usage_of(&self, org: OrgId) -> Result<u64, Error> {
        let cached = self.usage.lock().ok().and_then(|m| m.get(&org).copied());
        if let Some(u) = cached.filter(|u| u.read_at.elapsed() < USAGE_TTL) {
            return Ok(u.bytes);
        }
        let org_text = org.to_string();
        let mut bytes = 0u64;
        let mut listed = 0usize;
        for area in ["orgs", "uploads"] {
            let prefix = self.path_of([area, org_text.as_str()]);
            let mut objects = self.store.list(Some(&prefix));
            while let Some(meta) = futures::StreamExt::next(&mut objects).await {
                let meta = meta.map_err(|e| storage_error("list", e))?;
                bytes = bytes.saturating_add(meta.size);
                listed += 1;
                if listed >= LIST_MAX {
                    break;
                }
            }
        }
        if let Ok(mut map) = self.usage.lock() {
            if map.len() >= USAGE_ORGS_MAX && !map.contains_key(&org) {
                let oldest = map.iter().min_by_key(|(_, u)| u.read_at).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
            map.insert(
                org,
                Usage {
                    bytes,
                    read_at: std::time::Instant::now(),
                },
            );
        }
        Ok(bytes)
    }

    fn add_usage(&self, org: OrgId, bytes: u64) {
        if let Ok(mut map) = self.usage.lock()
            && let Some(u) = map.get_mut(&org)
        {
            u.bytes = u.bytes.saturating_add(bytes);
        }
    }

    /// Reads an object of `org`. Another organization's object is "not found".
    pub async fn get(&self, org: OrgId, key: &MediaKey) -> Result<Media, Error> {
        self.read(self.path(org, key), key).await
    }

    /// Reads an upload of request `upload` of `org` ("not found" until it is written).
    pub async fn get_upload(
        &self,
        org: OrgId,
        upload: &UploadId,
        key: &MediaKey,
    ) -> Result<Media, Error> {
        self.read(self.upload_path(org, upload, key), key).await
    }

    async fn read(&self, path: ObjectPath, key: &MediaKey) -> Result<Media, Error> {
        let found = match self.store.get(&path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(creapic_core::Error::NotFound { resource: "media" }.into());
            }
            Err(e) => return Err(storage_error("read", e)),
        };
        if found.meta.size > OBJECT_MAX_BYTES as u64 {
            return Err(storage_error(
                "read",
                "stored object exceeds the size limit",
            ));
        }
        let bytes = found.bytes().await.map_err(|e| storage_error("read", e))?;
        Ok(Media {
            bytes,
            media_type: key.media_type(),
        })
    }

    /// Deletes every upload of request `upload` of `org`; returns how many objects went.
    pub async fn delete_uploads(&self, org: OrgId, upload: &UploadId) -> Result<u64, Error> {
        let org_text = org.to_string();
        let prefix = self.path_of(["uploads", org_text.as_str(), upload.as_str()]);
        self.delete_listed(&prefix, |_| true).await
    }

    /// Deletes staged uploads last written before `cutoff` (unix ms): what a crashed request
    /// or render left behind. At most [`LIST_MAX`] objects per call; returns how many went.
    pub async fn sweep_uploads(&self, cutoff: Timestamp) -> Result<u64, Error> {
        let prefix = self.path_of(["uploads"]);
        let cutoff = cutoff.unix_ms();
        self.delete_listed(&prefix, |meta| {
            meta.last_modified.timestamp_millis() < cutoff
        })
        .await
    }

    async fn delete_listed(
        &self,
        prefix: &ObjectPath,
        doomed_if: impl Fn(&object_store::ObjectMeta) -> bool,
    ) -> Result<u64, Error> {
        let mut doomed = Vec::new();
        {
            let mut objects = self.store.list(Some(prefix));
            while let Some(meta) = futures::StreamExt::next(&mut objects).await {
                let meta = meta.map_err(|e| storage_error("list", e))?;
                if doomed_if(&meta) {
                    doomed.push(meta);
                }
                if doomed.len() >= LIST_MAX {
                    break;
                }
            }
        }
        let mut deleted = 0;
        for meta in doomed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error("delete", e)),
            }
            // The owner's usage shrinks: forget its figure so the next check re-reads it.
            if let Some(org) = meta.location.parts().nth(self.prefix_len() + 1)
                && let Ok(org) = OrgId::parse(org.as_ref())
                && let Ok(mut map) = self.usage.lock()
            {
                map.remove(&org);
            }
            deleted += 1;
        }
        Ok(deleted)
    }

    fn prefix_len(&self) -> usize {
        self.prefix
            .as_ref()
            .split('/')
            .filter(|p| !p.is_empty())
            .count()
    }

    fn signature(&self, org: OrgId, key: &MediaKey, expires: i64) -> HmacSha256 {
        let mut mac = self.signing.mac();
        mac.update(format!("v1\n{org}\n{key}\n{expires}").as_bytes());
        mac
    }

    /// A link to `key` of `org` valid until `expires_at` (at most [`LINK_TTL_MAX`] after `now`).
    pub fn sign(
        &self,
        org: OrgId,
        key: &MediaKey,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<SignedLink, Error> {
        if expires_at <= now || expires_at.since(now) > LINK_TTL_MAX {
            return Err(Error::InvalidParameter {
                name: "expiresAt",
                message: "must be in the future and at most 7 days away".into(),
            });
        }
        let expires = expires_at.unix_ms().div_euclid(1000);
        let tag = self.signature(org, key, expires).finalize().into_bytes();
        Ok(SignedLink {
            org,
            key: key.clone(),
            expires,
            signature: b64url(&tag),
        })
    }

    /// Checks a link's parts at `now`: the signature must match this organization, key and
    /// expiry (compared in constant time), and the expiry must not have passed.
    pub fn verify(
        &self,
        org: OrgId,
        key: &MediaKey,
        expires: i64,
        signature: &str,
        now: Timestamp,
    ) -> Result<(), Error> {
        use base64::Engine as _;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature.as_bytes())
            .map_err(|_| Error::MediaLinkInvalid {
                reason: "malformed",
            })?;
        self.signature(org, key, expires)
            .verify_slice(&tag)
            .map_err(|_| Error::MediaLinkInvalid {
                reason: "bad_signature",
            })?;
        if now.unix_ms().div_euclid(1000) >= expires {
            return Err(Error::MediaLinkInvalid { reason: "expired" });
        }
        Ok(())
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use creapic_core::random::SeededRandom;

    fn org(seed: u64) -> OrgId {
        OrgId::generate(Timestamp::from_unix_ms(1), &SeededRandom::new(seed))
    }

    #[test]
    fn keys_are_validated() {
        let key = MediaKey::of(b"hello", MediaType::Png);
        assert_eq!(MediaKey::parse(key.as_str()).ok(), Some(key.clone()));
        assert_eq!(key.media_type(), MediaType::Png);
        for bad in [
            "",
            "abc.png",
            "../etc/passwd",
            &format!("{}.exe", "a".repeat(64)),
            &format!("{}.png", "A".repeat(64)),
            &format!("{}/x.png", "a".repeat(63)),
        ] {
            assert!(MediaKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn objects_are_per_organization_and_content_addressed() {
        let media = MediaStore::in_memory(SigningKey::generate());
        let (a, b) = (org(1), org(2));
        let bytes = Bytes::from_static(b"\x89PNG fake");
        let k1 = media.put(a, bytes.clone(), MediaType::Png).await.unwrap();
        let k2 = media.put(a, bytes.clone(), MediaType::Png).await.unwrap();
        assert_eq!(k1, k2);
        assert_eq!(media.get(a, &k1).await.unwrap().bytes, bytes);
        let e = media.get(b, &k1).await.unwrap_err();
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn signed_links_bind_org_key_and_expiry() {
        let media = MediaStore::in_memory(SigningKey::generate());
        let (a, b) = (org(1), org(2));
        let key = MediaKey::of(b"x", MediaType::Png);
        let other = MediaKey::of(b"y", MediaType::Png);
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let later = now.plus(std::time::Duration::from_secs(60));
        let link = media.sign(a, &key, now, later).unwrap();
        assert!(link.url("/api/media/").starts_with("/api/media/"));
        let ok = |org, key: &MediaKey, exp, sig: &str, at| media.verify(org, key, exp, sig, at);
        assert!(ok(a, &key, link.expires, &link.signature, now).is_ok());
        let reason = |r: Result<(), Error>| match r {
            Err(Error::MediaLinkInvalid { reason }) => reason,
            other => panic!("{other:?}"),
        };
        // Expired.
        assert_eq!(
            reason(ok(a, &key, link.expires, &link.signature, later)),
            "expired"
        );
        // Tampered expiry, key, signature.
        assert_eq!(
            reason(ok(a, &key, link.expires + 3600, &link.signature, now)),
            "bad_signature"
        );
        assert_eq!(
            reason(ok(a, &other, link.expires, &link.signature, now)),
            "bad_signature"
        );
        let mut sig = link.signature.clone();
        sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
        assert_eq!(
            reason(ok(a, &key, link.expires, &sig, now)),
            "bad_signature"
        );
        assert_eq!(reason(ok(a, &key, link.expires, "%%%", now)), "malformed");
        // Another organization.
        assert_eq!(
            reason(ok(b, &key, link.expires, &link.signature, now)),
            "bad_signature"
        );
        // Another installation's key.
        let elsewhere = MediaStore::in_memory(SigningKey::generate());
        assert!(
            elsewhere
                .verify(a, &key, link.expires, &link.signature, now)
                .is_err()
        );
        // Bounded lifetimes.
        assert!(media.sign(a, &key, now, now).is_err());
        assert!(
            media
                .sign(a, &key, now, now.plus(LINK_TTL_MAX * 2))
                .is_err()
        );
    }

    #[test]
    fn stores_are_chosen_by_url() {
        let key = SigningKey::generate();
        let none: [(&str, &str); 0] = [];
        assert!(MediaStore::from_url("memory://", none, key.clone()).is_ok());
        assert!(MediaStore::from_url("not a url", none, key.clone()).is_err());
        assert!(SigningKey::new(vec![0; 8]).is_err());
        // Derived keys: stable for one key and purpose, different across either.
        let same = SigningKey::new(vec![7; 32]).unwrap();
        let other = SigningKey::new(vec![8; 32]).unwrap();
        assert_eq!(same.derive("a"), same.clone().derive("a"));
        assert_ne!(same.derive("a"), same.derive("b"));
        assert_ne!(same.derive("a"), other.derive("a"));
        #[cfg(feature = "s3")]
        {
            // Building the client needs no network; S3-compatible servers set the endpoint.
            let opts = [
                ("aws_region", "us-east-1"),
                ("aws_endpoint", "http://127.0.0.1:9000"),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
            ];
            let s3 = MediaStore::from_url("s3://media-bucket/creapic", opts, key).unwrap();
            assert_eq!(
                s3.path(org(1), &MediaKey::of(b"x", MediaType::Png))
                    .as_ref()
                    .split('/')
                    .take(2)
                    .collect::<Vec<_>>(),
                ["creapic", "orgs"]
            );
        }
    }

    #[tokio::test]
    async fn local_filesystem_round_trip() {
        let dir = std::env::temp_dir().join(format!("creapic-media-{}", std::process::id()));
        let media = MediaStore::local(&dir, SigningKey::generate()).unwrap();
        let key = media
            .put(org(3), Bytes::from_static(b"{}"), MediaType::Json)
            .await
            .unwrap();
        assert!(key.as_str().ends_with(".json"));
        assert_eq!(&media.get(org(3), &key).await.unwrap().bytes[..], b"{}");
        let url = format!("file://{}", dir.display());
        let again = MediaStore::from_url(&url, [("", "")], SigningKey::generate()).unwrap();
        assert_eq!(&again.get(org(3), &key).await.unwrap().bytes[..], b"{}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
