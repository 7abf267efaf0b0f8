//! The client's address, as the host hands it to the kit: [`PeerAddr`].
//!
//! The kit audits key creation and deletion "with IP address" and charges failed API-key
//! lookups to the caller's address, but it never sees a socket: the host accepts connections.
//! So the host tells it, per request, with a request extension. Design decision: **the kit's own
//! type, not a server framework's.** A plain hyper (or any tower) host inserts [`PeerAddr`]; an
//! axum host may instead serve with `into_make_service_with_connect_info::<SocketAddr>()`, whose
//! `axum::extract::ConnectInfo<SocketAddr>` the kit also reads. When both are present
//! [`PeerAddr`] wins: it is what the host chose to say (say, the address a PROXY-protocol header
//! carried). Neither present means no address: audit events carry none and failed lookups are
//! limited only by the memory of refused keys. `X-Forwarded-For` is read on top of this only
//! with `KitConfig::trust_forwarded_for` (see [`crate::http::handlers::request_context`]).

use std::net::{IpAddr, SocketAddr};

/// The address of the client that sent a request. Insert it into the request's extensions
/// before the request reaches the kit:
///
/// ```
/// use creapic_server_kit::PeerAddr;
/// # let remote: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
/// let mut request = http::Request::new(axum::body::Body::empty());
/// request.extensions_mut().insert(PeerAddr(remote));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client's address in `extensions`: [`PeerAddr`], else axum's `ConnectInfo<SocketAddr>`.
pub fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions.get::<PeerAddr>().map(|p| p.0.ip()).or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_own_address_wins_over_connect_info() {
        let mut ext = http::Extensions::new();
        assert_eq!(peer_ip(&ext), None);
        ext.insert(axum::extract::ConnectInfo(SocketAddr::from((
            [10, 0, 0, 1],
            1,
        ))));
        assert_eq!(peer_ip(&ext), Some(IpAddr::from([10, 0, 0, 1])));
        ext.insert(PeerAddr(SocketAddr::from(([127, 0, 0, 1], 2))));
        assert_eq!(peer_ip(&ext), Some(IpAddr::from([127, 0, 0, 1])));
    }
}
