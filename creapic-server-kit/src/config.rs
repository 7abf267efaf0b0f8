//! Settings of the HTTP layer: prices, input limits, rate limits and which proxies are trusted
//! to name the client, with defaults a host can start from and override field by field.

use std::time::Duration;

/// What each operation costs, in credits (the public API calls them tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// `POST /api/public/images/generate` at standard quality.
    pub image_standard: u64,
    /// `POST /api/public/images/generate` at hd quality.
    pub image_hd: u64,
    /// A scene render at standard quality.
    pub scene_standard: u64,
    /// A scene render at hd quality.
    pub scene_hd: u64,
    /// Each image of a bulk job (`POST /api/playground/images`): 1, as the 001 document says.
    pub bulk_image: u64,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            image_standard: 1,
            image_hd: 2,
            scene_standard: 2,
            scene_hd: 4,
            bulk_image: 1,
        }
    }
}

/// Input limits. Every request is bounded before any work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub body_max_bytes: usize,
    /// Longest prompt, in characters.
    pub prompt_max_chars: usize,
    /// Most prompts in a bulk job.
    pub prompts_max: usize,
    /// Most layers in a scene.
    pub scene_layers_max: usize,
    /// Largest decoded layer image, in bytes.
    pub layer_max_bytes: usize,
    /// How long a signed media URL stays valid.
    pub media_url_ttl: Duration,
    /// How long an in-flight idempotent request holds its key before a retry may take over,
    /// unless it renews it (a running request renews it every third of this, so only a request
    /// that died loses it).
    pub idempotency_lock: Duration,
    /// Longest a synchronous generation (`POST /api/public/images/generate`) may run, provider
    /// retries included; past it the request is a 504 `provider_timeout` and its hold is
    /// released. Also capped below the core's `stale_hold_after`, so the stale-hold sweeper
    /// never releases the hold of a request still running.
    pub generation_timeout: Duration,
}

/// How much younger than the core's `stale_hold_after` a generation's deadline stays: the
/// capture or release after the deadline, and clock skew between replicas.
pub const GENERATION_MARGIN: Duration = Duration::from_secs(60);

impl Limits {
    /// The deadline of a synchronous generation: [`Limits::generation_timeout`], but always
    /// [`GENERATION_MARGIN`] short of `stale_hold_after`, the age at which the core's sweeper
    /// releases a request's hold as abandoned.
    pub fn generation_deadline(&self, stale_hold_after: Duration) -> Duration {
        self.generation_timeout
            .min(stale_hold_after.saturating_sub(GENERATION_MARGIN))
            .max(Duration::from_secs(1))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_max_bytes: 1024 * 1024,
            prompt_max_chars: creapic_core::wire::PROMPT_MAX_CHARS,
            prompts_max: creapic_core::job::JOB_ITEMS_MAX,
            scene_layers_max: creapic_core::wire::SCENE_LAYERS_MAX,
            layer_max_bytes: 700 * 1024,
            media_url_ttl: Duration::from_secs(24 * 60 * 60),
            idempotency_lock: Duration::from_secs(60),
            generation_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// Per-key request rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key.
    pub per_second: u32,
    /// Requests a key may send at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 50,
            burst: 100,
        }
    }
}

/// How many proxies in front of the kit are trusted to append the client's address to
/// `X-Forwarded-For`. The client writes whatever it likes into the header it sends, and each
/// proxy appends the address it received the connection from, so only the right-most entries
/// are trustworthy: with `hops` trusted proxies the client is the `hops`-th entry from the
/// right (the one the outermost trusted proxy appended), never the left-most. The default, no
/// hops, ignores the header and uses the peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustedProxies(u8);

impl TrustedProxies {
    /// No proxy is trusted: `X-Forwarded-For` is ignored.
    pub const NONE: TrustedProxies = TrustedProxies(0);
    /// Most trusted hops (a chain of proxies longer than this is a misconfiguration).
    pub const HOPS_MAX: u8 = 16;

    /// `hops` trusted proxies (at most [`TrustedProxies::HOPS_MAX`]; more is clamped to it).
    pub fn hops(hops: u8) -> Self {
        TrustedProxies(hops.min(Self::HOPS_MAX))
    }

    /// How many proxies are trusted.
    pub fn get(self) -> u8 {
        self.0
    }
}
