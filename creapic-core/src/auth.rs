//! Authentication and authorization: headers → [`Principal`], and the scope/organization checks.
//!
//! The hot path is [`Authenticator::authenticate`] on a warm cache: parse the header (borrowed),
//! hash into a stack array, look the digest up under a read lock, copy out a `Copy` principal and
//! note the use time in an atomic. No allocation, no store call, no store write.
//!
//! Last-used times are coalesced: each cached key remembers its latest use in memory, and
//! [`Authenticator::flush_usage`] writes every key that was used since its last flush in one store
//! call, at most once per key per [`AuthConfig::usage_flush_interval`]. A key's stored
//! `last_used_at` therefore lags real use by at most that interval plus the flush period.
//!
//! Revocation: a delete through this process calls [`Authenticator::forget_key`] before it
//! returns, and an epoch counter stops a lookup that raced the delete from re-caching the key.
//! Deletes made by *other* processes are seen when a cached entry's [`AuthConfig::cache_ttl`] runs
//! out (1 s by default), or sooner where a backend pushes revocations.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};
use crate::id::{AuditId, KeyId, OrgId, UserId};
use crate::key::{KeyDigest, KeyMode, KeyPrefix, extract_key};
use crate::random::RandomSource;
use crate::scope::{Scope, ScopeSet};
use crate::store::{KeyStore, KeyUsage};

/// Most usages sent to the store in one flush call.
const FLUSH_BATCH_MAX: usize = 1000;
/// Most usages of evicted or deleted keys kept waiting for the next flush.
const ORPHANS_MAX: usize = 100_000;
/// Marker for "never used" in the atomics.
const NEVER: i64 = i64::MIN;
/// Independent cache shards, so concurrent verifications on many cores do not all bounce one
/// lock's cache line. A power of two: the shard is picked by masking a digest byte.
const SHARDS: usize = 16;

/// Settings of the verification cache and the last-used flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// How long a verified key is trusted without asking the store again. Bounds how late a
    /// delete made by another process is noticed.
    pub cache_ttl: Duration,
    /// Most keys cached at once; past it, stale entries are evicted and, if the cache is still
    /// full, new keys are verified against the store without caching.
    pub cache_capacity: usize,
    /// The shortest time between two last-used writes of the same key.
    pub usage_flush_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_ttl: Duration::from_secs(1),
            cache_capacity: 100_000,
            usage_flush_interval: Duration::from_secs(60),
        }
    }
}

/// Who is calling: what a verified key stands for. `Copy`, so handlers pass it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The organization the key acts for.
    pub org: OrgId,
    /// The key.
    pub key: KeyId,
    /// Its display prefix.
    pub prefix: KeyPrefix,
    /// What it may do.
    pub scopes: ScopeSet,
    /// Live or test.
    pub mode: KeyMode,
    /// The user who created the key.
    pub created_by: UserId,
}

impl Principal {
    /// `Ok` when the key holds `scope`, else [`Error::MissingScope`].
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(Error::MissingScope(scope))
        }
    }

    /// `Ok` when the key belongs to `org`, else [`Error::WrongOrganization`].
    pub fn require_org(&self, org: OrgId) -> Result<()> {
        if self.org == org {
            Ok(())
        } else {
            Err(Error::WrongOrganization)
        }
    }

    /// Both checks: the scope first, then the organization.
    pub fn authorize(&self, scope: Scope, org: OrgId) -> Result<()> {
        self.require(scope)?;
        self.require_org(org)
    }
}

#[derive(Debug)]
struct Cached {
    principal: Principal,
    expires_at: Option<Timestamp>,
    fetched_at: Timestamp,
    /// Latest use seen, ms since epoch, or `NEVER`.
    last_used_ms: AtomicI64,
    /// Latest use already written to the store.
    flushed_ms: AtomicI64,
    /// When the last write of this key happened.
    flush_time_ms: AtomicI64,
}

impl Cached {
    fn usable_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    fn pending_usage(&self) -> Option<i64> {
        let used = self.last_used_ms.load(Ordering::Relaxed);
        (used != NEVER && used > self.flushed_ms.load(Ordering::Relaxed)).then_some(used)
    }

    /// Notes a use at `now_ms`, writing the shared cache line only when the time moved on.
    fn touch(&self, now_ms: i64) {
        if self.last_used_ms.load(Ordering::Relaxed) < now_ms {
            self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
    }
}

/// Hashes a key digest by taking 8 of its bytes: SHA-256 output is already uniformly random, so
/// SipHash would only add cost. Safe against flooding because only verified keys are ever
/// inserted: an attacker can choose what to look up, not what the table holds.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]::hash` writes the length first, then the bytes: keep the first 8 bytes seen
        // of the longest write (the digest itself).
        if bytes.len() >= 8 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        }
    }

    fn write_usize(&mut self, _: usize) {}
}

type Shard = RwLock<HashMap<KeyDigest, Cached, BuildHasherDefault<DigestHasher>>>;

/// Verifies keys against a [`KeyStore`] through a bounded cache, and coalesces last-used writes.
pub struct Authenticator<S: ?Sized> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: AuthConfig,
    /// The verification cache, split into [`SHARDS`] independently locked maps.
    shards: Box<[Shard]>,
    /// Bumped by every `forget_key` before it clears the shards; a lookup only caches its result
    /// if no forget started since the lookup did, so a key deleted mid-lookup is never cached.
    epoch: AtomicU64,
    /// Usage of keys that left the cache before their use was flushed.
    orphans: Mutex<Vec<(Principal, i64)>>,
}

impl<S: ?Sized> std::fmt::Debug for Authenticator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .field("cached_keys", &cached_len(&self.shards))
            .finish_non_exhaustive()
    }
}

fn read(
    shard: &Shard,
) -> std::sync::RwLockReadGuard<'_, HashMap<KeyDigest, Cached, BuildHasherDefault<DigestHasher>>> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(
    shard: &Shard,
) -> std::sync::RwLockWriteGuard<'_, HashMap<KeyDigest, Cached, BuildHasherDefault<DigestHasher>>> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

fn cached_len(shards: &[Shard]) -> usize {
    shards.iter().map(|s| read(s).len()).sum()
}

impl<S: KeyStore + ?Sized> Authenticator<S> {
    /// An authenticator over `store`.
    pub fn new(
        store: Arc<S>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
        config: AuthConfig,
    ) -> Self {
        Authenticator {
            store,
            clock,
            rng,
            config,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            epoch: AtomicU64::new(0),
            orphans: Mutex::new(Vec::new()),
        }
    }

    fn shard(&self, digest: &KeyDigest) -> &Shard {
        // The hasher uses bytes 0..8; pick the shard from another byte.
        &self.shards[usize::from(digest.as_bytes()[31]) & (SHARDS - 1)]
    }

    /// Verifies the credential in the request headers (`Authorization` and `x-api-key` values,
    /// raw bytes) and returns who is calling, or the 401 error of the 001 table.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<Principal> {
        let parsed = extract_key(authorization, x_api_key)?;
        let digest = parsed.digest();
        let now = self.clock.now();
        if let Some(hit) = self.cached(&digest, now) {
            return hit;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(key) = self.store.key_by_digest(&digest).await? else {
            return Err(Error::InvalidKey);
        };
        if !key.is_usable_at(now) || key.mode != parsed.mode() {
            self.drop_entry(&digest);
            return Err(Error::InvalidKey);
        }
        let principal = Principal {
            org: key.org,
            key: key.id,
            prefix: key.prefix,
            scopes: key.scopes,
            mode: key.mode,
            created_by: key.created_by,
        };
        let entry = Cached {
            principal,
            expires_at: key.expires_at,
            fetched_at: now,
            last_used_ms: AtomicI64::new(now.unix_ms()),
            flushed_ms: AtomicI64::new(key.last_used_at.map_or(NEVER, Timestamp::unix_ms)),
            flush_time_ms: AtomicI64::new(NEVER),
        };
        self.insert(digest, entry, epoch);
        Ok(principal)
    }

    /// Authenticates, then checks `scope`: the common guard of an endpoint.
    pub async fn authorize(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
        scope: Scope,
    ) -> Result<Principal> {
        let principal = self.authenticate(authorization, x_api_key).await?;
        principal.require(scope)?;
        Ok(principal)
    }

    /// A warm hit, if the cache has a fresh entry. `None` means "ask the store".
    fn cached(&self, digest: &KeyDigest, now: Timestamp) -> Option<Result<Principal>> {
        let shard = read(self.shard(digest));
        let entry = shard.get(digest)?;
        if now.since(entry.fetched_at) >= self.config.cache_ttl {
            return None;
        }
        if !entry.usable_at(now) {
            return Some(Err(Error::InvalidKey));
        }
        entry.touch(now.unix_ms());
        Some(Ok(entry.principal))
    }

    fn insert(&self, digest: KeyDigest, entry: Cached, epoch: u64) {
        let capacity = (self.config.cache_capacity / SHARDS).max(1);
        let mut shard = write(self.shard(&digest));
        if self.epoch.load(Ordering::Acquire) != epoch {
            // A key was forgotten while we asked the store: our answer may predate the delete.
            // Record the use, but do not cache.
            self.orphan(entry.principal, entry.last_used_ms.load(Ordering::Relaxed));
            return;
        }
        if let Some(old) = shard.get(&digest) {
            // Refresh: keep what the old entry knew about usage and flushing.
            entry
                .last_used_ms
                .fetch_max(old.last_used_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            entry
                .flushed_ms
                .fetch_max(old.flushed_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            entry
                .flush_time_ms
                .store(old.flush_time_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        } else if shard.len() >= capacity {
            let now = entry.fetched_at;
            let ttl = self.config.cache_ttl;
            let mut evicted = Vec::new();
            shard.retain(|_, e| {
                let keep = now.since(e.fetched_at) < ttl;
                if !keep && let Some(used) = e.pending_usage() {
                    evicted.push((e.principal, used));
                }
                keep
            });
            for (p, used) in evicted {
                self.orphan(p, used);
            }
            if shard.len() >= capacity {
                self.orphan(entry.principal, entry.last_used_ms.load(Ordering::Relaxed));
                return;
            }
        }
        shard.insert(digest, entry);
    }

    fn drop_entry(&self, digest: &KeyDigest) {
        let mut shard = write(self.shard(digest));
        if let Some(old) = shard.remove(digest)
            && let Some(used) = old.pending_usage()
        {
            self.orphan(old.principal, used);
        }
    }

    fn orphan(&self, principal: Principal, used_ms: i64) {
        if used_ms == NEVER {
            return;
        }
        let mut orphans = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
        if orphans.len() < ORPHANS_MAX {
            orphans.push((principal, used_ms));
        }
    }

    /// Drops a key from the cache so it is refused from now on. Called by key deletion before it
    /// returns; its unflushed usage is kept for the next flush.
    pub fn forget_key(&self, key: KeyId) {
        self.forget(|p| p.key == key);
    }

    /// Drops every cached key (e.g. when a backend reports that it lost revocation events).
    pub fn forget_all(&self) {
        self.forget(|_| true);
    }

    fn forget(&self, matches: impl Fn(&Principal) -> bool) {
        // Bump first: any lookup that started before this point will not cache its answer.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            let mut removed = Vec::new();
            write(shard).retain(|_, e| {
                let keep = !matches(&e.principal);
                if !keep && let Some(used) = e.pending_usage() {
                    removed.push((e.principal, used));
                }
                keep
            });
            for (p, used) in removed {
                self.orphan(p, used);
            }
        }
    }

    /// How many keys are cached.
    pub fn cached_len(&self) -> usize {
        cached_len(&self.shards)
    }

    /// Writes last-used times of keys used since their last flush, skipping keys flushed less
    /// than [`AuthConfig::usage_flush_interval`] ago unless `force`. One store call per
    /// [`FLUSH_BATCH_MAX`] keys. Returns how many keys were written.
    pub async fn flush_usage(&self, force: bool) -> Result<usize> {
        let now = self.clock.now();
        let interval =
            i64::try_from(self.config.usage_flush_interval.as_millis()).unwrap_or(i64::MAX);
        let mut due: Vec<(KeyDigest, Principal, i64)> = Vec::new();
        for shard in self.shards.iter() {
            for (digest, entry) in read(shard).iter() {
                let Some(used) = entry.pending_usage() else {
                    continue;
                };
                let last = entry.flush_time_ms.load(Ordering::Relaxed);
                if force || last == NEVER || now.unix_ms().saturating_sub(last) >= interval {
                    due.push((*digest, entry.principal, used));
                }
            }
        }
        let orphans: Vec<(Principal, i64)> =
            std::mem::take(&mut *self.orphans.lock().unwrap_or_else(PoisonError::into_inner));
        let mut usage: Vec<KeyUsage> = Vec::with_capacity(due.len() + orphans.len());
        let mut seen: HashMap<KeyId, usize> = HashMap::new();
        let all = due
            .iter()
            .map(|(_, p, used)| (*p, *used))
            .chain(orphans.iter().copied());
        for (p, used) in all {
            let at = Timestamp::from_unix_ms(used);
            if let Some(&i) = seen.get(&p.key) {
                usage[i].last_used_at = usage[i].last_used_at.max(at);
                continue;
            }
            seen.insert(p.key, usage.len());
            usage.push(KeyUsage {
                key: p.key,
                org: p.org,
                prefix: p.prefix,
                last_used_at: at,
                audit_id: AuditId::generate(at, self.rng.as_ref()),
            });
        }
        for chunk in usage.chunks(FLUSH_BATCH_MAX) {
            if let Err(e) = self.store.record_key_usage(chunk).await {
                // Keep the orphans for the next attempt; cached entries stay pending by themselves.
                let mut kept = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
                let room = ORPHANS_MAX.saturating_sub(kept.len());
                kept.extend(orphans.iter().copied().take(room));
                return Err(e);
            }
        }
        for (digest, _, used) in &due {
            if let Some(entry) = read(self.shard(digest)).get(digest) {
                entry.flushed_ms.fetch_max(*used, Ordering::Relaxed);
                entry.flush_time_ms.store(now.unix_ms(), Ordering::Relaxed);
            }
        }
        Ok(usage.len())
    }
}
