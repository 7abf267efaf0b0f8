//! The route handlers, one module per resource. Each public handler takes who is calling and
//! what it asks as extractors ([`crate::http::extract`]: the key authorized before the body is
//! read), calls `creapic_core` (or, for a paid synchronous generation,
//! [`crate::generation::paid`]), and answers with a wire type from `creapic_core::wire`, stamped
//! with the key's rate headers; every failure is an [`Error`] turned into a response. Handlers
//! never call the ledger.

pub mod audit;
pub mod credits;
pub mod images;
pub mod keys;
pub mod media;
pub mod members;
pub mod organizations;
pub mod playground;
pub mod scenes;
pub mod system;

use std::net::{IpAddr, SocketAddr};

use creapic_core::Principal;
use creapic_core::audit::RequestContext;
use creapic_core::id::JobId;
use creapic_core::job::{Job, JobKind};
use http::{HeaderMap, StatusCode, request::Parts};
use serde::Serialize;

use crate::Error;
use crate::config::TrustedProxies;
use crate::http::service::AppState;

/// `organizationId` in a public body. The organization always comes from the key; the field is
/// optional, and when sent it must name the key's organization: a malformed id is 400, another
/// organization 403 `wrong_organization` (nothing is done or charged).
pub(crate) fn same_organization(
    principal: &creapic_core::Principal,
    sent: Option<&str>,
) -> Result<(), Error> {
    let Some(text) = sent else {
        return Ok(());
    };
    let org = creapic_core::id::OrgId::parse(text).map_err(|_| Error::InvalidParameter {
        name: "organizationId",
        message: "must be a 36-character UUID".into(),
    })?;
    if org != principal.org {
        return Err(Error::Core(creapic_core::Error::WrongOrganization));
    }
    Ok(())
}

/// A listing's `cursor` query parameter, read with `parse` (an id, or a ledger or audit `seq`):
/// absent is the first page; anything `parse` refuses is the one 400 every listing answers.
pub(crate) fn cursor<T, E>(
    text: Option<&str>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, Error> {
    text.map(parse)
        .transpose()
        .map_err(|_| Error::InvalidParameter {
            name: "cursor",
            message: "not a cursor from this API".into(),
        })
}

/// A status and a serialized JSON body: what an idempotent handler's work returns, so that the
/// body can be stored for replays byte for byte.
pub fn json_reply<T: Serialize>(
    status: StatusCode,
    body: &T,
) -> Result<(StatusCode, Vec<u8>), crate::http::idempotent::Failure> {
    serde_json::to_vec(body)
        .map(|bytes| (status, bytes))
        .map_err(|e| {
            Error::Internal {
                message: format!("serializing a response: {e}"),
            }
            .into()
        })
}

/// A job of the caller's organization of the given kind, by the id in the path. Another
/// organization's job, a missing job and a job of another kind are the same "not found".
pub async fn job_of_kind(
    state: &AppState,
    principal: &Principal,
    id: &str,
    kind: JobKind,
    param: &'static str,
    resource: &'static str,
) -> Result<Job, Error> {
    let id = job_id_param(id, param, resource)?;
    job_by_id(state, principal, id, kind, resource).await
}

/// The job id in path parameter `param`, or the 400 naming it.
pub fn job_id_param(id: &str, param: &'static str, resource: &'static str) -> Result<JobId, Error> {
    JobId::parse(id).map_err(|_| Error::InvalidParameter {
        name: param,
        message: format!("must be a {resource} id (a UUID)"),
    })
}

/// A job of the caller's organization of the given kind (see [`job_of_kind`]).
pub async fn job_by_id(
    state: &AppState,
    principal: &Principal,
    id: JobId,
    kind: JobKind,
    resource: &'static str,
) -> Result<Job, Error> {
    let job = state.core().job(principal, id).await.map_err(Error::Core)?;
    if job.kind != kind {
        return Err(Error::Core(creapic_core::Error::NotFound { resource }));
    }
    Ok(job)
}

/// The request's client address and user agent, for audit events. The peer address is the
/// host's [`crate::PeerAddr`], else axum's `ConnectInfo<SocketAddr>` (see [`crate::http::peer`]);
/// `X-Forwarded-For` is read only when the kit is configured to trust proxies, and then only the
/// entry the outermost trusted proxy appended (see [`TrustedProxies`]).
pub fn request_context(parts: &Parts, trusted: TrustedProxies) -> RequestContext {
    let forwarded = forwarded_for(&parts.headers, trusted);
    let peer = crate::http::peer::peer_ip(&parts.extensions);
    let ua = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    RequestContext::new(forwarded.or(peer), ua)
}

/// The client address `trusted` proxies vouch for: the `hops`-th non-empty entry of
/// `X-Forwarded-For` counted from the right, over every header line in order (RFC 9110: repeated
/// lines are one comma-separated list). With fewer entries than hops, the left-most — each entry
/// was then appended by a trusted proxy. An entry that is not an address (`unknown`, garbage)
/// gives `None`, and the caller uses the peer address. Work is bounded by the header's size.
pub fn forwarded_for(headers: &HeaderMap, trusted: TrustedProxies) -> Option<IpAddr> {
    let hops = usize::from(trusted.get());
    if hops == 0 {
        return None;
    }
    let mut entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let mut chosen = None;
    for _ in 0..hops {
        match entries.next() {
            Some(entry) => chosen = Some(entry),
            None => break,
        }
    }
    parse_forwarded_entry(chosen?)
}

/// `1.2.3.4`, `2001:db8::1`, or either with a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Counts characters of `text` up to `max + 1` (bounded work on hostile input).
pub fn too_long(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().nth(max).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(lines: &[&str], hops: u8) -> Option<IpAddr> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }
        forwarded_for(&headers, TrustedProxies::hops(hops))
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_trusted_proxy_entry_is_taken_never_the_client_written_one() {
        // One trusted proxy appended 10.0.0.1 after what the client wrote.
        assert_eq!(xff(&["6.6.6.6, 10.0.0.1"], 1), ip("10.0.0.1"));
        assert_eq!(
            xff(&["6.6.6.6, 203.0.113.7, 10.0.0.1"], 2),
            ip("203.0.113.7")
        );
        // Repeated header lines are one list, in order.
        assert_eq!(xff(&["6.6.6.6", "10.0.0.1"], 1), ip("10.0.0.1"));
        assert_eq!(
            xff(&["6.6.6.6, 7.7.7.7", "10.0.0.2, 10.0.0.1"], 2),
            ip("10.0.0.2")
        );
        // Fewer entries than hops: the left-most, which a trusted proxy wrote.
        assert_eq!(xff(&["10.0.0.1"], 3), ip("10.0.0.1"));
        // Empty entries are not hops; ports and IPv6 are understood.
        assert_eq!(xff(&["6.6.6.6,, 10.0.0.1 ,"], 1), ip("10.0.0.1"));
        assert_eq!(xff(&["[2001:db8::1]:443"], 1), ip("2001:db8::1"));
        assert_eq!(xff(&["6.6.6.6, 10.0.0.1:5678"], 1), ip("10.0.0.1"));
        assert_eq!(xff(&["2001:db8::2"], 1), ip("2001:db8::2"));
    }

    #[test]
    fn untrusted_or_unusable_headers_give_no_address() {
        assert_eq!(xff(&["6.6.6.6, 10.0.0.1"], 0), None);
        assert_eq!(xff(&[], 1), None);
        assert_eq!(xff(&["6.6.6.6, unknown"], 1), None);
        assert_eq!(xff(&[" , "], 1), None);
    }
}
