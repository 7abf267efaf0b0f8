//! The OpenAPI 3.1 document, derived from the handlers' annotations and the wire types of
//! `creapic_core::wire` — never written by hand, so it cannot drift from what is served.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::http::handlers::{
    audit, credits, images, keys, media, members, organizations, playground, scenes, system,
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "creapic API",
        description = "Metered AI-media API secured by organization-scoped API keys. Send the key as `Authorization: Bearer <key>` or `x-api-key: <key>`. Errors are `{\"error\", \"code\", \"requestId\"}` with stable codes; every response carries `x-request-id`. Every POST honours `Idempotency-Key`."
    ),
    paths(
        images::generate,
        images::get,
        scenes::render,
        scenes::get,
        media::get,
        organizations::create,
        credits::get,
        credits::usage,
        playground::submit,
        playground::list,
        playground::status,
        playground::cancel,
        keys::list,
        keys::create,
        keys::delete,
        audit::list,
        members::list_organizations,
        members::list_members,
        members::add,
        members::set_role,
        members::remove,
        system::openapi,
        system::health,
        system::ready,
    ),
    modifiers(&Security),
    tags(
        (name = "images", description = "Synchronous image generation from text or a ready JSON prompt, and generations read back by id (API key, IMAGE_GENERATION)"),
        (name = "scenes", description = "Scene renders: a generated background with layers composited over it (API key, SCENE_RENDER)"),
        (name = "credits", description = "The key's organization's tokens: balance, held tokens, ledger and usage per day (any valid key)"),
        (name = "playground", description = "Bulk image jobs of the AI Media Maker: submit, then poll, list or cancel (API key, IMAGE_GENERATION; the listing also SCENE_RENDER)"),
        (name = "organizations", description = "Organizations created with an API key (ORGANIZATION_WRITE)"),
        (name = "keys", description = "API key management, called by a signed-in dashboard user (the host's session)"),
        (name = "members", description = "A signed-in dashboard user's organizations, and their members: listed by any member, changed by owners and admins"),
        (name = "audit", description = "The organization's audit log, called by a signed-in dashboard user"),
        (name = "media", description = "Generated images, served through signed, expiring links"),
        (name = "system", description = "Operational routes"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wi_live_<64 hex>")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "dashboard",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "session",
                "The host application's own session; the host's login layer puts the signed-in user into the request extensions",
            ))),
        );
        // The API is served wherever the document is: one server, relative to the document's
        // own address, so linters and generators see servers declared and no host is assumed.
        openapi.servers = Some(vec![utoipa::openapi::Server::new("/")]);
        // No security at the root, so an operation that names none is public; say so with an
        // explicit empty requirement (the same meaning, written down for linters and readers).
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                operation.security.get_or_insert_with(Vec::new);
            }
        }
        name_tagged_variants(&mut components.schemas);
    }
}

/// Gives each inline variant of a tagged union (`oneOf` of objects whose `type` is a single-value
/// enum) its own component, named after the union and the tag — `ImageSource` + `prompt` →
/// `ImageSourcePrompt` — and refers to it from the `oneOf`. The same schema, written so that
/// generated clients get stable, meaningful class names; openapi-python-client also cannot
/// build an inline variant holding a union or a free-form object (it warns and drops it).
fn name_tagged_variants(schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>) {
    let mut named = Vec::new();
    for (union, schema) in schemas.iter_mut() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        for item in &mut one_of.items {
            let RefOr::T(Schema::Object(variant)) = item else {
                continue;
            };
            let tag = match variant.properties.get("type") {
                Some(RefOr::T(Schema::Object(tag))) => match tag.enum_values.as_deref() {
                    Some([serde_json::Value::String(tag)]) => tag.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let mut chars = tag.chars();
            let name = match chars.next() {
                Some(first) => format!("{union}{}{}", first.to_uppercase(), chars.as_str()),
                None => continue,
            };
            let variant = std::mem::replace(item, RefOr::Ref(Ref::from_schema_name(&name)));
            named.push((name, variant));
        }
    }
    schemas.extend(named);
}

/// The document exactly as the types and annotations derive it: ids are plain strings and no
/// limit is stated. What `GET /api/openapi` serves is [`document_for`] the service's limits.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Path and query parameters that are ids (UUIDs) wherever they appear.
const UUID_PARAMETERS: [&str; 5] = ["jobId", "id", "org", "organizationId", "userId"];

/// The document a service serves: the derived one, with what the types cannot say written in —
/// ids as `format: uuid`, and the host's own [`Limits`](crate::config::Limits) (they are
/// configurable, so no attribute on a type could state them) as `minItems`/`maxItems`/
/// `maxLength` of the request bodies. Clients generated from it validate what the server checks.
pub fn document_for(limits: &crate::config::Limits) -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for item in paths.values_mut().filter_map(|i| i.as_object_mut()) {
            for operation in item.values_mut() {
                let Some(params) = operation
                    .get_mut("parameters")
                    .and_then(|p| p.as_array_mut())
                else {
                    continue;
                };
                for param in params {
                    let name = param
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .to_owned();
                    if UUID_PARAMETERS.contains(&name.as_str()) {
                        param["schema"] = json!({"type": "string", "format": "uuid"});
                    }
                    if name == "limit" && param["in"] == "query" {
                        param["schema"]["minimum"] = json!(1);
                        param["schema"]["maximum"] = json!(creapic_core::page::PAGE_LIMIT_MAX);
                    }
                }
            }
        }
    }
    let prompt = json!({"type": "string", "minLength": 1, "maxLength": limits.prompt_max_chars});
    let schemas = &mut doc["components"]["schemas"];
    if schemas.is_object() {
        let prompts = &mut schemas["BulkImagesRequest"]["properties"]["prompts"];
        if prompts.is_object() {
            prompts["minItems"] = json!(1);
            prompts["maxItems"] = json!(limits.prompts_max);
            prompts["items"] = prompt;
        }
        let key = &mut schemas["CreateKeyRequest"]["properties"];
        if key.is_object() {
            key["organizationId"]["format"] = json!("uuid");
            key["name"]["minLength"] = json!(1);
            key["name"]["maxLength"] = json!(creapic_core::key::NAME_MAX_CHARS);
            key["scopes"]["minItems"] = json!(1);
        }
        let email = &mut schemas["AddMemberRequest"]["properties"]["email"];
        if email.is_object() {
            email["minLength"] = json!(3);
            email["maxLength"] = json!(creapic_core::org::EMAIL_MAX_LEN);
        }
        let org = &mut schemas["CreateOrganizationRequest"]["properties"]["name"];
        if org.is_object() {
            org["minLength"] = json!(1);
            org["maxLength"] = json!(creapic_core::org::ORG_NAME_MAX_CHARS);
        }
        let layers = &mut schemas["SceneRenderRequest"]["properties"]["layers"];
        if layers.is_object() {
            layers["maxItems"] = json!(limits.scene_layers_max);
        }
    }
    crate::http::contract::annotate(&mut doc);
    doc
}
