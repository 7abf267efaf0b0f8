//! What every route can answer, derived from the error type: each route is a list of
//! [`Stage`]s it passes through, each stage names the [`Error`]s it can end in, and
//! [`Error::status`] turns those into statuses. The served OpenAPI document takes its error
//! responses from here ([`annotate`]), so a status the server can send is never missing from it,
//! and the route table is checked against [`ROUTES`] so a new route cannot skip it.
//!
//! The design decision: the list is of *causes*, not of statuses. Adding an error to a stage
//! (say, a new limit) updates the document of every route through that stage.

use std::collections::BTreeMap;
use std::time::Duration;

use creapic_core::scope::Scope;
use creapic_core::{Error as Core, StoreErrorKind};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::generation::Error as G;
use crate::http::error::Error;

/// A step a request goes through, with the errors it can end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Any route: a bug or a panic is a 500 with the error body.
    Always,
    /// An API key is checked: missing, malformed, unknown, lacking the scope; failed
    /// authentications limited per address; the key's rate limit; the store asked about the key.
    ApiKey(Scope),
    /// Any valid key of the organization: as [`Stage::ApiKey`] without a scope to lack.
    AnyKey,
    /// A dashboard route: the host's signed-in user, their role in the organization.
    Dashboard,
    /// A JSON body read under the size limit.
    JsonBody,
    /// Query or path parameters parsed (ids, cursors, limits).
    Parameters,
    /// A resource of the caller's organization looked up by id.
    Lookup,
    /// A membership change checked in the store's transaction: already a member, the last
    /// owner, a role that moved meanwhile, no such member.
    Members,
    /// `Idempotency-Key` handled (malformed header, in flight, reused with another body).
    Idempotent,
    /// Credits held or a job reserved (insufficient credits, a limit on the request).
    Paid,
    /// A synchronous generation: provider failures, its deadline, media storage, the quota.
    Generation,
    /// Inline images decoded and checked, stored once paid (scene layers).
    Images,
    /// The store is read or written.
    Store,
    /// A signed media link checked and its object read.
    MediaLink,
}

impl Stage {
    /// The errors this stage can end in (one of each kind; messages do not matter).
    pub fn errors(self) -> Vec<Error> {
        let second = Duration::from_secs(1);
        match self {
            Stage::Always => vec![Error::Internal {
                message: String::new(),
            }],
            Stage::ApiKey(scope) => {
                let mut errors = Stage::AnyKey.errors();
                errors.push(Core::MissingScope(scope).into());
                // `organizationId` sent for another organization than the key's.
                errors.push(Core::WrongOrganization.into());
                errors
            }
            Stage::AnyKey => vec![
                Core::MissingAuthorization.into(),
                Core::InvalidKeyFormat.into(),
                Core::InvalidKey.into(),
                Core::TooManyAuthFailures {
                    retry_after: second,
                }
                .into(),
                Error::RateLimited {
                    retry_after: second,
                },
                Core::store(StoreErrorKind::Unavailable, "").into(),
            ],
            Stage::Members => vec![
                Core::AlreadyMember.into(),
                Core::LastOwner.into(),
                Core::InvalidState("").into(),
                Core::NotFound { resource: "member" }.into(),
            ],
            Stage::Dashboard => vec![
                Error::NotSignedIn,
                Core::Forbidden { action: "" }.into(),
                Core::NotFound {
                    resource: "organization",
                }
                .into(),
            ],
            Stage::JsonBody => vec![
                Error::InvalidJson {
                    path: String::new(),
                    message: String::new(),
                },
                Error::UnsupportedMediaType,
                Error::BodyTooLarge { max: 0 },
                Core::LimitExceeded { what: "", max: 0 }.into(),
            ],
            Stage::Parameters => vec![
                Error::InvalidParameter {
                    name: "",
                    message: String::new(),
                },
                // A page size past the most a page may hold.
                Core::LimitExceeded { what: "", max: 0 }.into(),
            ],
            Stage::Lookup => vec![Core::NotFound { resource: "" }.into()],
            Stage::Idempotent => vec![
                Error::InvalidParameter {
                    name: "Idempotency-Key",
                    message: String::new(),
                },
                Core::IdempotencyInProgress.into(),
                Core::IdempotencyConflict.into(),
            ],
            Stage::Paid => vec![
                Core::InsufficientCredits {
                    needed: 0,
                    available: 0,
                }
                .into(),
                Core::LimitExceeded { what: "", max: 0 }.into(),
            ],
            Stage::Generation => vec![
                G::ProviderFailed {
                    provider: "",
                    message: String::new(),
                }
                .into(),
                G::ProviderTimeout { provider: "" }.into(),
                G::Media {
                    message: String::new(),
                }
                .into(),
                Core::LimitExceeded { what: "", max: 0 }.into(),
            ],
            Stage::Images => vec![
                G::InvalidImage {
                    message: String::new(),
                }
                .into(),
                Core::NotFound { resource: "media" }.into(),
                G::Media {
                    message: String::new(),
                }
                .into(),
            ],
            Stage::Store => vec![Core::store(StoreErrorKind::Unavailable, "").into()],
            Stage::MediaLink => vec![
                Error::InvalidParameter {
                    name: "",
                    message: String::new(),
                },
                G::MediaLinkInvalid { reason: "expired" }.into(),
                Core::NotFound { resource: "media" }.into(),
                G::Media {
                    message: String::new(),
                }
                .into(),
            ],
        }
    }
}

/// Every route of the kit's table with the stages it passes through. `routes.rs` is checked
/// against it (a test), so a route added there without an entry here fails.
pub const ROUTES: &[(&str, Method, &[Stage])] = &[
    (
        "/api/public/images/generate",
        Method::POST,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::ImageGeneration),
            Stage::JsonBody,
            Stage::Idempotent,
            Stage::Paid,
            Stage::Generation,
        ],
    ),
    (
        "/api/public/images/{id}",
        Method::GET,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::ImageGeneration),
            Stage::Parameters,
            Stage::Lookup,
        ],
    ),
    (
        "/api/public/scenes/render",
        Method::POST,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::SceneRender),
            Stage::JsonBody,
            Stage::Images,
            Stage::Idempotent,
            Stage::Paid,
        ],
    ),
    (
        "/api/public/scenes/render/{id}",
        Method::GET,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::SceneRender),
            Stage::Parameters,
            Stage::Lookup,
        ],
    ),
    (
        "/api/public/organizations/create",
        Method::POST,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::OrganizationWrite),
            Stage::JsonBody,
            Stage::Idempotent,
            Stage::Paid,
            Stage::Store,
        ],
    ),
    (
        "/api/playground/images",
        Method::POST,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::ImageGeneration),
            Stage::JsonBody,
            Stage::Idempotent,
            Stage::Paid,
        ],
    ),
    (
        "/api/playground/images",
        Method::GET,
        &[
            Stage::Always,
            // IMAGE_GENERATION or SCENE_RENDER: a key with neither is refused (403).
            Stage::ApiKey(Scope::ImageGeneration),
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/public/credits",
        Method::GET,
        &[
            Stage::Always,
            Stage::AnyKey,
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/public/credits/usage",
        Method::GET,
        &[
            Stage::Always,
            Stage::AnyKey,
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/playground/images/{jobId}",
        Method::GET,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::ImageGeneration),
            Stage::Parameters,
            Stage::Lookup,
        ],
    ),
    (
        "/api/playground/images/{jobId}/cancel",
        Method::POST,
        &[
            Stage::Always,
            Stage::ApiKey(Scope::ImageGeneration),
            Stage::Parameters,
            Stage::Lookup,
            Stage::Idempotent,
            Stage::Store,
        ],
    ),
    (
        "/api/keys",
        Method::GET,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/keys",
        Method::POST,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::JsonBody,
            Stage::Idempotent,
            Stage::Paid,
            Stage::Store,
        ],
    ),
    (
        "/api/keys/{id}",
        Method::DELETE,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::Lookup,
            Stage::Store,
        ],
    ),
    (
        "/api/audit",
        Method::GET,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/organizations",
        Method::GET,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/organizations/{organizationId}/members",
        Method::GET,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::Store,
        ],
    ),
    (
        "/api/organizations/{organizationId}/members",
        Method::POST,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::JsonBody,
            Stage::Idempotent,
            Stage::Members,
            Stage::Store,
        ],
    ),
    (
        "/api/organizations/{organizationId}/members/{userId}",
        Method::PATCH,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::JsonBody,
            Stage::Idempotent,
            Stage::Members,
            Stage::Store,
        ],
    ),
    (
        "/api/organizations/{organizationId}/members/{userId}",
        Method::DELETE,
        &[
            Stage::Always,
            Stage::Dashboard,
            Stage::Parameters,
            Stage::Idempotent,
            Stage::Members,
            Stage::Store,
        ],
    ),
    (
        "/api/media/{org}/{key}",
        Method::GET,
        &[Stage::Always, Stage::MediaLink],
    ),
    ("/api/openapi", Method::GET, &[Stage::Always]),
    ("/api/health", Method::GET, &[Stage::Always]),
    ("/api/ready", Method::GET, &[Stage::Always]),
];

/// The statuses a route can answer with an error, each with the codes that cause it, from its
/// stages; `None` for a route not in [`ROUTES`].
pub fn error_statuses(path: &str, method: &Method) -> Option<BTreeMap<u16, Vec<Error>>> {
    let (_, _, stages) = ROUTES.iter().find(|(p, m, _)| *p == path && m == method)?;
    let mut statuses: BTreeMap<u16, Vec<Error>> = BTreeMap::new();
    for stage in *stages {
        for error in stage.errors() {
            statuses
                .entry(error.status().as_u16())
                .or_default()
                .push(error);
        }
    }
    Some(statuses)
}

/// Answers the HTTP server gives before any route runs (hyper's request-head limits), so on
/// every operation; they carry no error body.
const TRANSPORT: [(u16, &str); 2] = [
    (
        414,
        "URI Too Long: the request line is longer than the server reads",
    ),
    (
        431,
        "Request Header Fields Too Large: the request head is larger than the server reads",
    ),
];

/// A link from an operation's success to an operation its answer lets a client call next:
/// (operation path, method, status, link name, target operation id, parameters).
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The links of the document.
const LINKS: &[Link] = &[
    (
        "/api/public/images/generate",
        "post",
        "200",
        "GetImage",
        "getImage",
        &[("id", "$response.body#/generation/id")],
    ),
    (
        "/api/public/scenes/render",
        "post",
        "202",
        "GetSceneRender",
        "getSceneRender",
        &[("id", "$response.body#/render/id")],
    ),
    (
        "/api/playground/images",
        "post",
        "202",
        "GetImageJob",
        "getImageJob",
        &[("jobId", "$response.body#/jobId")],
    ),
    (
        "/api/keys",
        "post",
        "201",
        "DeleteKey",
        "deleteKey",
        &[
            ("id", "$response.body#/apiKey/id"),
            ("organizationId", "$response.body#/apiKey/organizationId"),
        ],
    ),
];

/// Whether a route is behind an API key (it then answers with `RateLimit-*` headers).
fn keyed(stages: &[Stage]) -> bool {
    stages
        .iter()
        .any(|s| matches!(s, Stage::ApiKey(_) | Stage::AnyKey))
}

fn header(description: &str, schema: Value) -> Value {
    json!({"description": description, "schema": schema})
}

/// Writes into `doc` (the derived document, as JSON) every error response each route can send
/// that its annotation did not list, with the error body and the headers that matter:
/// `x-request-id` on every response, `Retry-After` where the error sets it, `RateLimit-*` on
/// routes behind a key, `Idempotent-Replayed` on the successes of routes that honour
/// `Idempotency-Key`.
pub fn annotate(doc: &mut Value) {
    for (path, method, status, name, target, parameters) in LINKS {
        let response = &mut doc["paths"][*path][*method]["responses"][*status];
        if response.is_object() {
            let parameters: serde_json::Map<String, Value> = parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect();
            response["links"][*name] = json!({"operationId": target, "parameters": parameters});
        }
    }
    let request_id = header(
        "The request's id (the client's `x-request-id` when it sent a valid one): quote it to support",
        json!({"type": "string"}),
    );
    let retry_after = header(
        "Seconds to wait before retrying",
        json!({"type": "integer", "minimum": 0}),
    );
    let rate_headers = [
        (
            "RateLimit-Limit",
            "Requests allowed per window for this key",
        ),
        ("RateLimit-Remaining", "Requests left in the current window"),
        ("RateLimit-Reset", "Seconds until the window resets"),
    ];
    for (path, method, stages) in ROUTES {
        let Some(statuses) = error_statuses(path, method) else {
            continue;
        };
        let method_name = method.as_str().to_ascii_lowercase();
        let Some(operation) = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(*path))
            .and_then(|i| i.get_mut(&method_name))
        else {
            continue;
        };
        let idempotent = stages.contains(&Stage::Idempotent);
        let responses = &mut operation["responses"];
        if !responses.is_object() {
            *responses = json!({});
        }
        for (status, description) in TRANSPORT {
            let key = status.to_string();
            if responses.get(&key).is_none() {
                responses[&key] = json!({"description": description});
            }
        }
        for (status, errors) in &statuses {
            let key = status.to_string();
            let mut codes: Vec<&str> = errors.iter().map(Error::code).collect();
            codes.sort_unstable();
            codes.dedup();
            if responses.get(&key).is_none() {
                let reason = StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                responses[&key] = json!({
                    "description": format!("{reason}: {}", codes.join(", ")),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                });
            }
            if errors.iter().any(|e| e.retry_after().is_some()) {
                responses[&key]["headers"]["Retry-After"] = retry_after.clone();
            }
        }
        if let Some(all) = responses.as_object_mut() {
            for (status, response) in all.iter_mut() {
                response["headers"]["x-request-id"] = request_id.clone();
                if keyed(stages) {
                    for (name, description) in rate_headers {
                        response["headers"][name] = header(description, json!({"type": "integer"}));
                    }
                }
                if idempotent && status.starts_with('2') {
                    response["headers"]["Idempotent-Replayed"] = header(
                        "`true` when this is the stored response of an earlier request with the same Idempotency-Key",
                        json!({"type": "string", "enum": ["true"]}),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyed_route_can_answer_401_403_429_and_503() {
        for (path, method, stages) in ROUTES {
            let statuses = error_statuses(path, method).unwrap_or_default();
            assert!(statuses.contains_key(&500), "{method} {path}");
            if keyed(stages) {
                for s in [401, 429, 503] {
                    assert!(statuses.contains_key(&s), "{method} {path} lacks {s}");
                }
            }
            if stages.iter().any(|s| matches!(s, Stage::ApiKey(_))) {
                assert!(statuses.contains_key(&403), "{method} {path} lacks 403");
            }
        }
    }
}
