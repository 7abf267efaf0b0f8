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
//!
//! Bad keys are cheap too. A well-formed key the store refused (unknown, deleted, expired) is
//! remembered for [`AuthConfig::miss_ttl`] in a bounded set of misses, so repeating it costs no
//! store call; a key created through this process leaves that set when its insert commits (a
//! creation epoch, like the revocation one, stops a racing lookup from re-adding it). And every
//! lookup that is not a warm hit is charged to the client's address
//! ([`Authenticator::authenticate_from`]): each address (IPv6 by /64) may fail
//! [`AuthConfig::failures_burst`] times at once and one more per
//! [`AuthConfig::failure_interval`]; past that its cold lookups are refused with
//! [`Error::TooManyAuthFailures`] before the store is asked, while warm keys — and keys this
//! process verified recently — still pass. A success gives its charge back. So a client trying
//! random keys costs the store a bounded number of lookups, whatever it sends. Concurrent cold
//! lookups of one key are one lookup (`in_flight.rs`): the others wait for its answer and
//! are not charged, so a burst with a valid new key is never refused.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};
use crate::id::{AuditId, KeyId, OrgId, UserId};
use crate::in_flight::{InFlight, Role};
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
/// How many times a request waits for another request's lookup of the same key before it asks
/// the store itself (a leader that recorded nothing twice in a row is not waited for again).
const FOLLOWS_MAX: usize = 2;

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
    /// How long a key the store refused is refused from memory. Short: a key created by
    /// another process with a digest missed here (only possible if the key was known before it
    /// existed) waits at most this long.
    pub miss_ttl: Duration,
    /// Most refused keys remembered; past it (after dropping expired ones) misses are not
    /// remembered, and the per-address limit alone bounds the store's work.
    pub miss_capacity: usize,
    /// Failed authentications a client address may make at once.
    pub failures_burst: u32,
    /// After the burst, one more failed authentication per this interval and address.
    pub failure_interval: Duration,
    /// Most client addresses tracked; past it (after dropping addresses back at a full budget)
    /// new addresses share one budget until room frees up.
    pub failure_addresses_max: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_ttl: Duration::from_secs(1),
            cache_capacity: 100_000,
            usage_flush_interval: Duration::from_secs(60),
            miss_ttl: Duration::from_secs(10),
            miss_capacity: 10_000,
            failures_burst: 20,
            failure_interval: Duration::from_secs(3),
            failure_addresses_max: 65_536,
        }
    }
}

/// Where a credential came from, as the failure limit counts it: an IPv4 address, or an IPv6
/// address's /64 (one subscriber's prefix; its 2^64 addresses are one client). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// The counted form of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientAddr(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientAddr(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    ClientAddr(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

/// Failed-authentication budgets per client address: GCRA, one "theoretical arrival time" per
/// address in unix ms. A charge is allowed while `tat - now <= tolerance`, and moves `tat` one
/// interval on; a refund moves it back. An address whose `tat` is in the past has its whole
/// budget and is dropped when room is needed.
#[derive(Debug)]
struct FailureBudgets {
    interval_ms: i64,
    /// `(burst - 1) * interval`: how far ahead of now `tat` may run.
    tolerance_ms: i64,
    capacity: usize,
    table: Mutex<BudgetTable>,
}

#[derive(Debug, Default)]
struct BudgetTable {
    tats: HashMap<ClientAddr, i64>,
    /// The shared budget of new addresses while the table is full.
    overflow: i64,
}

/// Which budget a charge went to, for its refund.
#[derive(Debug, Clone, Copy)]
enum Charge {
    Addr(ClientAddr),
    Overflow,
}

impl FailureBudgets {
    fn new(config: &AuthConfig) -> Self {
        let interval_ms = i64::try_from(config.failure_interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        FailureBudgets {
            interval_ms,
            tolerance_ms: interval_ms.saturating_mul(i64::from(config.failures_burst.max(1) - 1)),
            capacity: config.failure_addresses_max.max(1),
            table: Mutex::new(BudgetTable::default()),
        }
    }

    /// Charges one lookup to `addr`, or says how long until it may try again.
    fn charge(&self, addr: ClientAddr, now_ms: i64) -> std::result::Result<Charge, Duration> {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !t.tats.contains_key(&addr) && t.tats.len() >= self.capacity {
            t.tats.retain(|_, tat| *tat > now_ms);
        }
        let charge = if t.tats.len() < self.capacity || t.tats.contains_key(&addr) {
            Charge::Addr(addr)
        } else {
            Charge::Overflow
        };
        let tat = match charge {
            Charge::Addr(addr) => t.tats.entry(addr).or_insert(now_ms),
            Charge::Overflow => &mut t.overflow,
        };
        let start = (*tat).max(now_ms);
        if start - now_ms > self.tolerance_ms {
            let wait = start - now_ms - self.tolerance_ms;
            return Err(Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
        }
        *tat = start.saturating_add(self.interval_ms);
        Ok(charge)
    }

    /// Gives a charge back (the lookup succeeded, or the store failed).
    fn refund(&self, charge: Charge) {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let interval = self.interval_ms;
        match charge {
            Charge::Addr(addr) => {
                if let Some(tat) = t.tats.get_mut(&addr) {
                    *tat = tat.saturating_sub(interval);
                }
            }
            Charge::Overflow => t.overflow = t.overflow.saturating_sub(interval),
        }
    }
}

/// Digests the store refused, each with when that answer expires (unix ms). Keyed with the
/// standard library's randomly seeded hasher, not [`DigestHasher`]: the digests here are chosen
/// by whoever sends keys, so they must not be able to aim at one bucket.
#[derive(Debug)]
struct Misses {
    capacity: usize,
    ttl_ms: i64,
    table: Mutex<MissTable>,
}

#[derive(Debug, Default)]
struct MissTable {
    until: HashMap<KeyDigest, i64>,
    /// No sweep of expired misses before this time (a full table of fresh misses is not
    /// rescanned on every insert).
    next_sweep_ms: i64,
}

impl Misses {
    fn new(config: &AuthConfig) -> Self {
        Misses {
            capacity: config.miss_capacity,
            ttl_ms: i64::try_from(config.miss_ttl.as_millis()).unwrap_or(i64::MAX),
            table: Mutex::new(MissTable::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MissTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn contains(&self, digest: &KeyDigest, now_ms: i64) -> bool {
        self.ttl_ms > 0 && self.lock().until.get(digest).is_some_and(|&u| now_ms < u)
    }

    fn insert(&self, digest: KeyDigest, now_ms: i64) {
        if self.capacity == 0 || self.ttl_ms <= 0 {
            return;
        }
        let mut t = self.lock();
        if t.until.len() >= self.capacity && !t.until.contains_key(&digest) {
            if now_ms < t.next_sweep_ms {
                return;
            }
            t.until.retain(|_, u| now_ms < *u);
            t.next_sweep_ms = now_ms.saturating_add(self.ttl_ms / 4);
            if t.until.len() >= self.capacity {
                return;
            }
        }
        t.until.insert(digest, now_ms.saturating_add(self.ttl_ms));
    }

    fn remove(&self, digest: &KeyDigest) {
        self.lock().until.remove(digest);
    }
}

/// What the verification cache knows about a digest.
enum Lookup {
    /// A fresh answer.
    Hit(Result<Principal>),
    /// A valid key whose entry is past its TTL: ask the store again, without charging the
    /// client's address (this process verified the key recently).
    Stale,
    /// Nothing.
    Absent,
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
    /// Keys the store refused recently.
    misses: Misses,
    /// Bumped by every `note_created`; a lookup only remembers a miss if no key was created
    /// since it started, so a key created mid-lookup is never remembered as missing.
    created_epoch: AtomicU64,
    /// Failed-authentication budgets per client address.
    failures: FailureBudgets,
    /// Store lookups made (cache misses that reached the store).
    lookups: AtomicU64,
    /// Lookups in flight by digest: a burst with one cold key asks the store once.
    in_flight: InFlight<KeyDigest>,
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
            misses: Misses::new(&config),
            created_epoch: AtomicU64::new(0),
            failures: FailureBudgets::new(&config),
            lookups: AtomicU64::new(0),
            in_flight: InFlight::new(),
        }
    }

    fn shard(&self, digest: &KeyDigest) -> &Shard {
        // The hasher uses bytes 0..8; pick the shard from another byte.
        &self.shards[usize::from(digest.as_bytes()[31]) & (SHARDS - 1)]
    }

    /// Verifies the credential in the request headers (`Authorization` and `x-api-key` values,
    /// raw bytes) and returns who is calling, or the 401 error of the 001 table. No client
    /// address: nothing is charged to one (see [`Authenticator::authenticate_from`]).
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
    ) -> Result<Principal> {
        self.authenticate_from(authorization, x_api_key, None).await
    }

    /// [`Authenticator::authenticate`] for a request from `client`. A warm hit costs nothing;
    /// anything else is charged to the client's address first — refused with
    /// [`Error::TooManyAuthFailures`] once its failures are past the budget, without asking the
    /// store — and the charge is given back when the key turns out valid (or the store fails).
    /// A key refused within [`AuthConfig::miss_ttl`] is refused again from memory.
    pub async fn authenticate_from(
        &self,
        authorization: Option<&[u8]>,
        x_api_key: Option<&[u8]>,
        client: Option<IpAddr>,
    ) -> Result<Principal> {
        let parsed = extract_key(authorization, x_api_key)?;
        let digest = parsed.digest();
        let mut now = self.clock.now();
        let mut stale = match self.cached(&digest, now) {
            Lookup::Hit(hit) => return hit,
            Lookup::Stale => true,
            Lookup::Absent => false,
        };
        // One lookup per digest at a time: a request for a key already being looked up waits
        // for that answer (uncharged) and reads it from the cache or the misses. If the leader
        // recorded nothing (a store error, a cancellation, a concurrent creation or deletion),
        // this request looks the key up itself — after following at most twice, uncoordinated.
        let mut _flight = None;
        for _ in 0..FOLLOWS_MAX {
            match self.in_flight.join(&digest) {
                Role::Leader(guard) => {
                    _flight = Some(guard);
                    break;
                }
                Role::Follower(flight) => {
                    flight.landed().await;
                    now = self.clock.now();
                    stale = match self.cached(&digest, now) {
                        Lookup::Hit(hit) => return hit,
                        Lookup::Stale => true,
                        Lookup::Absent => false,
                    };
                    if self.misses.contains(&digest, now.unix_ms()) {
                        return Err(Error::InvalidKey);
                    }
                }
            }
        }
        let charge = match client.filter(|_| !stale) {
            Some(ip) => Some(
                self.failures
                    .charge(ClientAddr::of(ip), now.unix_ms())
                    .map_err(|retry_after| Error::TooManyAuthFailures { retry_after })?,
            ),
            None => None,
        };
        let refund = || {
            if let Some(c) = charge {
                self.failures.refund(c);
            }
        };
        if self.misses.contains(&digest, now.unix_ms()) {
            return Err(Error::InvalidKey);
        }
        let created = self.created_epoch.load(Ordering::Acquire);
        let epoch = self.epoch.load(Ordering::Acquire);
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let found = match self.store.key_by_digest(&digest).await {
            Ok(found) => found,
            Err(e) => {
                refund();
                return Err(e);
            }
        };
        let Some(key) = found else {
            self.remember_miss(digest, now, created);
            return Err(Error::InvalidKey);
        };
        if !key.is_usable_at(now) || key.mode != parsed.mode() {
            self.drop_entry(&digest);
            self.remember_miss(digest, now, created);
            return Err(Error::InvalidKey);
        }
        refund();
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

    /// Remembers that the store refused `digest`, unless a key was created since the lookup
    /// started (`created` is the creation epoch it read first).
    fn remember_miss(&self, digest: KeyDigest, now: Timestamp, created: u64) {
        if self.created_epoch.load(Ordering::Acquire) == created {
            self.misses.insert(digest, now.unix_ms());
        }
    }

    /// A key with `digest` now exists: it is no longer refused from memory, and no lookup that
    /// started before this call will remember it as missing. Called by key creation after the
    /// key is stored.
    pub fn note_created(&self, digest: &KeyDigest) {
        self.created_epoch.fetch_add(1, Ordering::AcqRel);
        self.misses.remove(digest);
    }

    /// How many lookups reached the store since this authenticator was built.
    pub fn store_lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
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

    /// A warm hit, if the cache has a fresh entry; else whether it has a stale one.
    fn cached(&self, digest: &KeyDigest, now: Timestamp) -> Lookup {
        let shard = read(self.shard(digest));
        let Some(entry) = shard.get(digest) else {
            return Lookup::Absent;
        };
        if now.since(entry.fetched_at) >= self.config.cache_ttl {
            return Lookup::Stale;
        }
        if !entry.usable_at(now) {
            return Lookup::Hit(Err(Error::InvalidKey));
        }
        entry.touch(now.unix_ms());
        Lookup::Hit(Ok(entry.principal))
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
    /// than [`AuthConfig::usage_flush_interval`] ago unless `force`. One store call per batch
    /// of keys (at most 1,000). Returns how many keys were written.
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
