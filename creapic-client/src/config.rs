//! Building a [`Client`]: [`ClientBuilder`] (base URL, API key, timeouts, retries, user agent,
//! extra headers, dashboard authentication, a custom `reqwest::Client`) and the environment
//! variables [`Client::from_env`] reads.
//!
//! Design decision: every check happens in [`ClientBuilder::build`], before any request — the
//! key's format, the base URL's shape, header validity — so a misconfigured client fails at
//! start-up with a message naming the setting, not on its first call with a 401. Secrets (the
//! API key, a dashboard token, sensitive headers) are held in redacting types from the moment
//! they enter the builder, so neither the builder's nor the client's `Debug` can show them.

use std::sync::Arc;
use std::time::Duration;

use creapic_core::key::ApiKeySecret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::client::{Client, Inner};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::time::{Time, TokioTime};

/// The environment variable holding the API key, as the 001 document recommends.
pub const API_KEY_ENV: &str = "AI_MEDIA_MAKER_API_KEY";
/// Read for the API key when [`API_KEY_ENV`] is unset or empty.
pub const API_KEY_ENV_FALLBACK: &str = "CREAPIC_API_KEY";
/// The environment variable holding the base URL (e.g. `http://127.0.0.1:8080`).
pub const BASE_URL_ENV: &str = "CREAPIC_BASE_URL";
/// The base URL used when none is configured: the 001 document's host.
pub const DEFAULT_BASE_URL: &str = "https://maker.cappuai.com";
/// The default per-attempt timeout: one synchronous image generation fits well within it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The default connect timeout (built-in HTTP client only).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JSON answer read by default (a 100-image job status is well under it).
pub const DEFAULT_RESPONSE_MAX_BYTES: usize = 8 * 1024 * 1024;
/// The largest media download read by default.
pub const DEFAULT_MEDIA_MAX_BYTES: usize = 32 * 1024 * 1024;
/// The longest timeout accepted: anything longer is a hang, not a timeout.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);

/// How dashboard calls (`/api/keys`, `/api/audit`) authenticate.
///
/// The server kit serves these routes to a person signed in to the *host's* application: the
/// host's own session layer (cookie, session token, SSO header) finds the user and hands it to
/// the kit. So the client sends whatever that layer expects — never the API key, which
/// authenticates integrations, not people, and is not sent on dashboard calls at all.
#[derive(Clone)]
pub enum DashboardAuth {
    /// `Authorization: Bearer <token>` (a session or access token of the host).
    Bearer(SecretString),
    /// `Cookie: <cookies>` (e.g. `session=…`).
    Cookie(SecretString),
    /// Any other header the host's session layer reads.
    Header {
        /// The header's name.
        name: String,
        /// Its value.
        value: SecretString,
    },
}

impl DashboardAuth {
    /// A bearer session token.
    pub fn bearer(token: impl Into<String>) -> Self {
        DashboardAuth::Bearer(SecretString::from(token.into()))
    }

    /// A `Cookie` header value.
    pub fn cookie(cookies: impl Into<String>) -> Self {
        DashboardAuth::Cookie(SecretString::from(cookies.into()))
    }

    /// Any header.
    pub fn header(name: impl Into<String>, value: impl Into<String>) -> Self {
        DashboardAuth::Header {
            name: name.into(),
            value: SecretString::from(value.into()),
        }
    }

    /// The header to send, marked sensitive (hyper and reqwest never print it).
    pub(crate) fn to_header(&self) -> Result<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            DashboardAuth::Bearer(t) => (
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", t.expose_secret()),
            ),
            DashboardAuth::Cookie(c) => (reqwest::header::COOKIE, c.expose_secret().to_owned()),
            DashboardAuth::Header { name, value } => (
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::Config {
                    message: format!("dashboard auth header name {name:?} is not a header name"),
                })?,
                value.expose_secret().to_owned(),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| Error::Config {
            message: "the dashboard credential is not a valid header value".into(),
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

impl std::fmt::Debug for DashboardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DashboardAuth::Bearer(_) => f.write_str("Bearer([REDACTED])"),
            DashboardAuth::Cookie(_) => f.write_str("Cookie([REDACTED])"),
            DashboardAuth::Header { name, .. } => write!(f, "Header({name}: [REDACTED])"),
        }
    }
}

/// Where the builder's API key came from, and its text until `build` checks it.
enum KeySource {
    Checked(ApiKeySecret),
    Text {
        text: SecretString,
        origin: &'static str,
    },
}

/// Builds a [`Client`]; see [`Client::builder`].
///
/// ```no_run
/// # fn run() -> creapic_client::Result<()> {
/// use std::time::Duration;
/// use creapic_client::{Client, RetryPolicy};
/// let client = Client::builder()
///     .base_url("http://127.0.0.1:8080")
///     .api_key_text(std::env::var("AI_MEDIA_MAKER_API_KEY").unwrap_or_default())
///     .timeout(Duration::from_secs(60))
///     .retry(RetryPolicy::new().max_retries(5))
///     .user_agent("my-integration/1.2")
///     .build()?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    key: Option<KeySource>,
    dashboard: Option<DashboardAuth>,
    headers: Vec<(String, SecretString)>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    user_agent: Option<String>,
    http: Option<reqwest::Client>,
    time: Arc<dyn Time>,
    response_max_bytes: usize,
    media_max_bytes: usize,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.key.as_ref().map(|_| "[REDACTED]"))
            .field("dashboard", &self.dashboard)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: None,
            key: None,
            dashboard: None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            user_agent: None,
            http: None,
            time: Arc::new(TokioTime),
            response_max_bytes: DEFAULT_RESPONSE_MAX_BYTES,
            media_max_bytes: DEFAULT_MEDIA_MAX_BYTES,
        }
    }
}

impl ClientBuilder {
    /// A builder with the defaults: [`DEFAULT_BASE_URL`], no key, [`DEFAULT_TIMEOUT`], the
    /// default [`RetryPolicy`].
    pub fn new() -> Self {
        ClientBuilder::default()
    }

    /// The server's base URL, e.g. `https://maker.cappuai.com` or `http://127.0.0.1:8080`. A
    /// path prefix is kept (`https://host/creapic` calls `https://host/creapic/api/…`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The API key, already checked.
    pub fn api_key(mut self, key: ApiKeySecret) -> Self {
        self.key = Some(KeySource::Checked(key));
        self
    }

    /// The API key as text; its format is checked by [`ClientBuilder::build`]
    /// ([`Error::InvalidApiKeyFormat`]). The text is moved into a zeroizing secret at once.
    pub fn api_key_text(mut self, key: impl Into<String>) -> Self {
        self.key = Some(KeySource::Text {
            text: SecretString::from(key.into()),
            origin: "the builder",
        });
        self
    }

    /// Reads the process environment: the key from [`API_KEY_ENV`] (else
    /// [`API_KEY_ENV_FALLBACK`]) and the base URL from [`BASE_URL_ENV`], where set and not
    /// empty. Settings made before this call are overridden only by variables that are set.
    pub fn env(self) -> Self {
        self.env_from(|name| std::env::var(name).ok())
    }

    /// [`ClientBuilder::env`] with a custom lookup (tests, or configuration from elsewhere).
    pub fn env_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        for origin in [API_KEY_ENV, API_KEY_ENV_FALLBACK] {
            if let Some(text) = get(origin) {
                self.key = Some(KeySource::Text {
                    text: SecretString::from(text.trim().to_owned()),
                    origin,
                });
                break;
            }
        }
        if let Some(url) = get(BASE_URL_ENV) {
            self.base_url = Some(url.trim().to_owned());
        }
        self
    }

    /// How dashboard calls authenticate (see [`DashboardAuth`]).
    pub fn dashboard_auth(mut self, auth: DashboardAuth) -> Self {
        self.dashboard = Some(auth);
        self
    }

    /// A header sent with every request to the base URL's server (e.g. what a host's proxy
    /// needs; media links to other hosts do not get it). Values are treated
    /// as secrets: never printed, marked sensitive on the wire types. `Authorization`,
    /// `Idempotency-Key` and `x-request-id` set per request take precedence.
    pub fn default_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into(), SecretString::from(value.into())));
        self
    }

    /// The timeout of one attempt, from connecting to the last byte of the answer (default
    /// 120 s, at most [`TIMEOUT_MAX`]). Retries get a fresh timeout each.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout of the built-in HTTP client (default 10 s; ignored with
    /// [`ClientBuilder::http_client`], whose own setting applies).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The retry policy (default: 3 retries, see [`RetryPolicy`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Shorthand for `retry(policy.max_retries(n))`.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retry = self.retry.max_retries(n);
        self
    }

    /// The `User-Agent` (default `creapic-client/<version>`); it appears in the organization's
    /// audit log.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Use this `reqwest::Client` (proxies, TLS roots, connection pools of the host). The
    /// timeout and user agent of this builder are still applied per request.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock and sleep used for retries and waiters (default [`TokioTime`]).
    pub fn time(mut self, time: Arc<dyn Time>) -> Self {
        self.time = time;
        self
    }

    /// The largest JSON answer read (default 8 MiB).
    pub fn response_max_bytes(mut self, n: usize) -> Self {
        self.response_max_bytes = n;
        self
    }

    /// The largest media download read (default 32 MiB).
    pub fn media_max_bytes(mut self, n: usize) -> Self {
        self.media_max_bytes = n;
        self
    }

    /// Checks everything and builds the client. Nothing is sent.
    pub fn build(self) -> Result<Client> {
        let api_key = match self.key {
            None => None,
            Some(KeySource::Checked(k)) => Some(k),
            Some(KeySource::Text { text, origin }) => Some(
                ApiKeySecret::new(text.expose_secret().to_owned())
                    .map_err(|_| Error::InvalidApiKeyFormat { origin })?,
            ),
        };
        let base = parse_base_url(self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?;
        if self.timeout.is_zero() || self.timeout > TIMEOUT_MAX {
            return Err(Error::Config {
                message: format!("timeout must be between 1 ms and {TIMEOUT_MAX:?}"),
            });
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::Config {
                message: format!("{name:?} is not a header name"),
            })?;
            let mut v =
                HeaderValue::from_str(value.expose_secret()).map_err(|_| Error::Config {
                    message: format!("the value of header {name:?} is not a valid header value"),
                })?;
            v.set_sensitive(true);
            headers.append(header, v);
        }
        let dashboard = match &self.dashboard {
            Some(auth) => Some(auth.to_header()?),
            None => None,
        };
        let user_agent = self
            .user_agent
            .unwrap_or_else(|| format!("creapic-client/{}", env!("CARGO_PKG_VERSION")));
        let user_agent = HeaderValue::from_str(&user_agent).map_err(|_| Error::Config {
            message: "the user agent is not a valid header value".into(),
        })?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .build()
                .map_err(|e| Error::Config {
                    message: format!("could not build the HTTP client: {e}"),
                })?,
        };
        Ok(Client::from_inner(Inner {
            http,
            base,
            api_key,
            dashboard,
            headers,
            user_agent,
            timeout: self.timeout,
            retry: self.retry,
            time: self.time,
            response_max_bytes: self.response_max_bytes,
            media_max_bytes: self.media_max_bytes,
        }))
    }
}

fn parse_base_url(text: &str) -> Result<Url> {
    let bad = |why: &str| Error::Config {
        message: format!("base URL {text:?} {why} (set {BASE_URL_ENV} or ClientBuilder::base_url)"),
    };
    let url = Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => return Err(bad("needs the `tls` feature of creapic-client")),
        _ => return Err(bad("must start with http:// or https://")),
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "wi_test_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_environment_supplies_key_and_base_url() {
        let client = ClientBuilder::new()
            .env_from(env(&[
                (API_KEY_ENV, KEY),
                (API_KEY_ENV_FALLBACK, "ignored"),
                (BASE_URL_ENV, "http://127.0.0.1:9/prefix/"),
            ]))
            .build();
        let client = client.expect("valid environment");
        assert_eq!(client.base_url().as_str(), "http://127.0.0.1:9/prefix/");
        assert!(client.has_api_key());
        let fallback = ClientBuilder::new()
            .env_from(env(&[(API_KEY_ENV, "  "), (API_KEY_ENV_FALLBACK, KEY)]))
            .build()
            .expect("fallback variable");
        assert!(fallback.has_api_key());
        assert_eq!(fallback.base_url().as_str(), "https://maker.cappuai.com/");
    }

    #[test]
    fn a_malformed_key_is_refused_before_any_request_and_never_echoed() {
        let err = ClientBuilder::new()
            .env_from(env(&[(API_KEY_ENV, "sk_live_supersecretvalue")]))
            .build()
            .err();
        let Some(err) = err else {
            panic!("a malformed key must be refused")
        };
        assert_eq!(err.code(), "invalid_api_key_format");
        assert!(err.to_string().contains(API_KEY_ENV));
        assert!(!err.to_string().contains("supersecret"));
        assert!(!format!("{err:?}").contains("supersecret"));
        let err = ClientBuilder::new().api_key_text("nope").build().err();
        assert!(matches!(
            err,
            Some(Error::InvalidApiKeyFormat {
                origin: "the builder"
            })
        ));
    }

    #[test]
    fn bad_settings_are_named() {
        for (url, want) in [
            ("ftp://example.com", "http:// or https://"),
            ("not a url", "is not a URL"),
            ("http://user:pw@example.com", "credentials"),
            ("http://example.com/?x=1", "query"),
        ] {
            let e = ClientBuilder::new().base_url(url).build().err();
            let text = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains(want), "{url}: {text}");
        }
        let e = ClientBuilder::new()
            .base_url("http://127.0.0.1:1")
            .default_header("bad header", "x")
            .build()
            .err();
        assert_eq!(
            e.map(|e| e.code().to_owned()).as_deref(),
            Some("invalid_config")
        );
        let e = ClientBuilder::new()
            .base_url("http://127.0.0.1:1")
            .timeout(Duration::ZERO)
            .build()
            .err();
        assert!(matches!(e, Some(Error::Config { .. })));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let builder = ClientBuilder::new()
            .base_url("http://127.0.0.1:1")
            .api_key_text(KEY)
            .dashboard_auth(DashboardAuth::bearer("session-token-value"))
            .default_header("x-proxy-secret", "proxy-secret-value");
        let shown = format!("{builder:?}");
        let client = builder.build().expect("valid");
        let shown = format!("{shown} {client:?}");
        for secret in [&KEY[8..], "session-token-value", "proxy-secret-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("x-proxy-secret"), "names are shown: {shown}");
    }
}
