//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and their
//! types: `router` registers every API route through `utoipa_axum::routes!`, which adds the route
//! and its operation together, so the document cannot lack a route the router serves (the
//! `every_route_is_documented` test below checks that nothing bypasses it). Served at
//! `GET /api/openapi.json`, with Swagger UI at `/api/v1/functions/swagger-ui` (seed 003), its
//! assets built into the binary.

use utoipa::{
    IntoResponses, Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::error::ErrorEnvelope;

pub const DOCUMENT_PATH: &str = "/api/openapi.json";
pub const SWAGGER_UI_PATH: &str = "/api/v1/functions/swagger-ui";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway",
        description = "Container functions from source: upload or push code, Slipway builds it \
            with BuildKit, pushes the image, records its digest and serves it. Every answer that \
            is not a success carries `{\"error\": {\"code\", \"message\"}}`; `code` is stable and \
            snake_case.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    security(("api_key" = [])),
    components(schemas(ErrorEnvelope<'static>)),
    tags(
        (name = "functions", description = "Functions: create, read, history, rollback (seed 000)"),
        (name = "deployments", description = "Uploads that build and deploy, and their build logs"),
        (name = "deletions", description = "Soft deletion with a grace period"),
        (name = "runtime", description = "Serving settings and instances (seed 001, seed 003's PUT)"),
        (name = "invoke", description = "Calls to a function, proxied to its instance"),
        (name = "events", description = "Invocation events (seed 003's v3 events)"),
        (name = "git", description = "Git bindings, and the providers' push webhooks"),
        (name = "keys", description = "API keys and their signing secrets"),
        (name = "ops", description = "Operators only: queues, jobs, dead letters, schedules, metrics"),
        (name = "health", description = "Liveness"),
    )
)]
pub struct ApiDoc;

/// Besides its own results, any route may answer these.
#[derive(IntoResponses)]
pub enum Failures {
    /// Refused; `code` says why (`unauthorized`, `forbidden`, `function_not_found`,
    /// `invalid_json`, `signature_required`, `rate_limited`, …). Nothing was changed.
    #[response(status = "4XX")]
    Refused(ErrorEnvelope<'static>),
    /// The database or a dependency is unavailable (`Retry-After` says when to ask again), or an
    /// internal error, logged on our side.
    #[response(status = "5XX")]
    Failed(ErrorEnvelope<'static>),
}

/// The function a route's `{id}` names. A malformed id, someone else's function and one that
/// never existed are the same 404.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the parameter; handlers read it raw")]
pub struct FunctionId {
    /// The function's id.
    id: uuid::Uuid,
}

/// `Idempotency-Key` on a request that changes a function: a retry with the same key and request
/// gets the first answer again instead of acting twice.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "documents the header; the idempotency middleware reads it"
)]
pub struct IdempotencyKey {
    /// 1 to 255 visible ASCII characters; answers are kept for 24 hours.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

/// axum's catch-all `{*rest}` is written `{rest}` in OpenAPI.
pub fn use_openapi_path_syntax(document: &mut utoipa::openapi::OpenApi) {
    let paths = std::mem::take(&mut document.paths.paths);
    document.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>` (`slipway create-key`, \
                         `POST /api/keys`).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Slipway-Signature",
                "An HMAC-SHA256 request signature, with `X-Slipway-Key-Id`, \
                 `X-Slipway-Timestamp` and `X-Slipway-Nonce`: \
                 `v2=hex(HMAC(signing secret, key id \"\\n\" METHOD \"\\n\" PATH_AND_QUERY \"\\n\" \
                 TIMESTAMP \"\\n\" NONCE \"\\n\" hex(SHA-256(body))))`. Required for key \
                 management and operators' actions, and for changes to a function created \
                 without `skip_signing`. A v2-signed request needs no `Authorization`.",
            ))),
        );
        components.add_security_scheme(
            "provider_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Hub-Signature-256",
                "The git provider's proof of a webhook delivery, checked against the binding's \
                 secret: GitHub `X-Hub-Signature-256`, Gitea `X-Gitea-Signature`, GitLab \
                 `X-Gitlab-Token`.",
            ))),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    /// `routes!` binds a route to its operation; a plain `.route(..)` would serve a path the
    /// document does not show. Only the console's pages and the document itself may do that.
    #[test]
    fn every_route_is_documented() {
        let undocumented_allowed = ["src/console/mod.rs"];
        let mut offenders = Vec::new();
        visit(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path(),
            &mut |file| {
                let relative = file
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches('/')
                    .to_owned();
                if undocumented_allowed.contains(&relative.as_str()) {
                    return;
                }
                let text = fs::read_to_string(file).unwrap();
                for (number, line) in text.lines().enumerate() {
                    // Spelled in pieces so this line is not a match itself.
                    if [
                        concat!(".", "route("),
                        concat!(".", "route_service("),
                        concat!(".", "nest("),
                    ]
                    .iter()
                    .any(|call| line.contains(call))
                        && !line.trim_start().starts_with("//")
                    {
                        offenders.push(format!("{relative}:{}: {}", number + 1, line.trim()));
                    }
                }
            },
        );
        assert!(
            offenders.is_empty(),
            "routes added without their OpenAPI operation (use utoipa_axum::routes!; a method of \
             another kind must not be named `route`):\n{}",
            offenders.join("\n")
        );
    }

    fn visit(dir: &Path, each: &mut impl FnMut(&Path)) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, each);
            } else if path.extension().is_some_and(|e| e == "rs") {
                each(&path);
            }
        }
    }
}
