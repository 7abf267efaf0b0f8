//! The OpenAPI 3.1 document, derived from the handlers' annotations and the wire types of
//! `creapic_core::wire` — never written by hand, so it cannot drift from what is served.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::handlers::{audit, images, keys, media, organizations, playground, scenes, system};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "creapic API",
        description = "Metered AI-media API secured by organization-scoped API keys. Send the key as `Authorization: Bearer <key>` or `x-api-key: <key>`. Errors are `{\"error\", \"code\", \"requestId\"}` with stable codes; every response carries `x-request-id`. Every POST honours `Idempotency-Key`."
    ),
    paths(
        images::generate,
        scenes::render,
        scenes::get,
        media::get,
        organizations::create,
        playground::submit,
        playground::status,
        keys::list,
        keys::create,
        keys::delete,
        audit::list,
        system::openapi,
        system::health,
    ),
    modifiers(&Security),
    tags(
        (name = "public", description = "Public API, called with an API key"),
        (name = "playground", description = "Bulk image jobs (AI Media Maker)"),
        (name = "dashboard", description = "Key management and audit, called by a signed-in dashboard user (the host's session)"),
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
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
