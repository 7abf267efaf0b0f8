//! Where a webhook may be delivered: public addresses only, unless the host allows any.
//!
//! An endpoint URL is written by a tenant, so without a check it is a way into the host's own
//! network: `http://169.254.169.254/` (cloud metadata), `http://127.0.0.1:5432/`, a neighbour on
//! `10.0.0.0/8`. The design decision that shapes this module: **check the address that is
//! connected to, not the name that was registered.** A name that resolved to a public address
//! when it was registered can resolve to a private one when the event is sent (DNS rebinding),
//! so the check sits in the HTTP client's resolver ([`GuardedResolver`]): it resolves, drops
//! every non-public address, and hands the client only what is left, which is what it connects
//! to. IP literals never reach a resolver, so [`check`] refuses them before a delivery starts
//! (and resolves names once, so a refused destination fails at once instead of being retried).
//! The client uses no proxy (a proxy would resolve the name itself) and follows no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::generation::Error;

/// Most addresses one name may resolve to that are considered.
const ADDRS_MAX: usize = 32;

/// Which addresses webhook deliveries may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Destinations {
    /// Public unicast addresses only: no loopback, private, link-local (169.254.0.0/16, cloud
    /// metadata), shared (100.64.0.0/10), unique-local, multicast, documentation or reserved
    /// address, and no IPv6 address that embeds one of those IPv4 addresses.
    #[default]
    PublicOnly,
    /// Any address. For a host whose receivers live on its own network (and for tests on
    /// loopback); the host then vouches for every tenant's endpoint.
    Any,
}

impl Destinations {
    /// Whether a delivery may connect to `ip`.
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            Destinations::Any => true,
            Destinations::PublicOnly => is_public(ip),
        }
    }
}

/// Whether `ip` is a public unicast address (see [`Destinations::PublicOnly`]).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64) // shared address space, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || ip.is_multicast()
        || a >= 240; // reserved and broadcast, 240.0.0.0/4
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96): the IPv4 address it translates to decides.
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4 (2002::/16): the embedded IPv4 address decides.
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated), ::/96
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
        || (s[0] == 0x2001 && s[1] == 0) // Teredo, 2001::/32 (tunnels to anything)
        || (s[0] == 0x2001 && s[1] == 0x0db8); // documentation, 2001:db8::/32
    !special
}

fn refused(host: &str) -> Error {
    Error::WebhookFailed {
        message: format!(
            "the webhook destination {host} is not a public address (loopback, private, \
             link-local and reserved addresses are refused unless the host allows them)"
        ),
    }
}

/// Resolves `host` and keeps only the addresses `destinations` allows; an error when none is
/// left (or the name does not resolve).
pub(crate) async fn resolve(host: &str, destinations: Destinations) -> Result<Vec<IpAddr>, Error> {
    let found = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| Error::WebhookFailed {
            message: format!("the webhook destination {host} does not resolve"),
        })?;
    let allowed: Vec<IpAddr> = found
        .take(ADDRS_MAX)
        .map(|a| a.ip())
        .filter(|ip| destinations.allows(*ip))
        .collect();
    if allowed.is_empty() {
        return Err(refused(host));
    }
    Ok(allowed)
}

/// Checks an endpoint URL before delivering to it (or when a host registers it): an IP literal
/// must be allowed, a name must resolve to at least one allowed address. The connection itself
/// is guarded again by [`GuardedResolver`], so a name that changes its answer later still
/// reaches no refused address.
pub async fn check(url: &url::Url, destinations: Destinations) -> Result<(), Error> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) if !destinations.allows(IpAddr::V4(ip)) => {
            Err(refused(&ip.to_string()))
        }
        Some(url::Host::Ipv6(ip)) if !destinations.allows(IpAddr::V6(ip)) => {
            Err(refused(&ip.to_string()))
        }
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Ok(()),
        Some(url::Host::Domain(name)) => resolve(name, destinations).await.map(|_| ()),
        None => Err(Error::WebhookFailed {
            message: "the webhook URL has no host".into(),
        }),
    }
}

/// The webhook client's resolver: resolves with the system resolver and gives the client only
/// the addresses [`Destinations`] allows, so the address connected to is the address checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) destinations: Destinations,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.destinations;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = resolve(&host, destinations).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001::1",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(!is_public(ip(private)), "{private} must not be public");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(public)), "{public} must be public");
        }
        assert!(Destinations::Any.allows(ip("127.0.0.1")));
        assert!(!Destinations::default().allows(ip("127.0.0.1")));
    }

    #[tokio::test]
    async fn literals_and_names_are_checked() {
        let url = |s: &str| url::Url::parse(s).unwrap_or_else(|_| unreachable!());
        for refused in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://[::1]:9/",
            "http://[::ffff:7f00:1]/",
            "http://localhost:9/",
        ] {
            let r = check(&url(refused), Destinations::PublicOnly).await;
            assert!(r.is_err(), "{refused}");
        }
        assert!(
            check(&url("http://localhost:9/"), Destinations::Any)
                .await
                .is_ok()
        );
        assert!(
            check(&url("http://93.184.216.34/"), Destinations::PublicOnly)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_resolver_gives_the_client_no_refused_address() {
        use reqwest::dns::Resolve as _;
        let guarded = GuardedResolver {
            destinations: Destinations::PublicOnly,
        };
        let name = "localhost".parse().unwrap_or_else(|_| unreachable!());
        assert!(guarded.resolve(name).await.is_err());
        let open = GuardedResolver {
            destinations: Destinations::Any,
        };
        let name = "localhost".parse().unwrap_or_else(|_| unreachable!());
        let addrs: Vec<_> = open
            .resolve(name)
            .await
            .map(|a| a.collect())
            .unwrap_or_default();
        assert!(addrs.iter().all(|a: &SocketAddr| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
