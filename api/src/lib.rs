//! Slipway's REST API (axum): accepts function code, commits durable jobs, answers reads, and
//! proxies invocations to the active container.
//!
//! Architecture invariant: the api never talks to BuildKit or the runtime, and only reads the
//! registry (`POST /api/functions/{id}/verify`); its only data-plane duty is forwarding
//! invocations to an endpoint the worker recorded.

pub mod aliases;
pub mod auth;
pub mod body;
pub mod console;
pub mod deletion;
pub mod deploy;
pub mod error;
pub mod event_stream;
pub mod events;
pub mod git_bindings;
pub mod git_delivery;
pub mod git_push;
pub mod hot_cache;
pub mod idempotency;
pub mod init;
pub mod integrity;
pub mod invocations;
pub mod openapi;
pub mod registries;
pub mod rollback;
pub mod routes;
pub mod runtime;
pub mod signing;
pub mod uploads;
pub mod versions;
pub mod wake;
pub mod webhooks;

use std::{convert::Infallible, sync::Arc};

use anyhow::Context;
use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, Request},
    middleware::{self, Next},
    response::Response,
    routing::MethodRouter,
};
use slipway_shared::{config::ApiConfig, store::ArchiveStore};
use sqlx::PgPool;
use tower_http::trace::TraceLayer;
use tracing::error;
use utoipa::OpenApi as _;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt as _},
    routes,
};

use crate::{body::OversizedBody, error::InternalErrorReport};

/// Deliveries past this are refused before anything reads them. GitHub caps payloads at 25 MB;
/// a push of that size is not a deploy we want.
const WEBHOOK_BODY_LIMIT: usize = 5 * 1024 * 1024;

/// What every handler shares. axum clones the state for each request, so it is one `Arc`:
/// one reference count per request instead of one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub pool: PgPool,
    pub store: Arc<ArchiveStore>,
    pub config: Arc<ApiConfig>,
    pub http: reqwest::Client,
    /// The invocation proxy's client: hyper's own pool, without reqwest's URL parsing and body
    /// adapters on a path every invocation takes.
    pub invoke: routes::invoke::InvokeClient,
    pub invocations: Arc<invocations::InvocationMarks>,
    pub events: Arc<events::EventRecorder>,
    /// The registries verification reads, one client per host (its login and tokens reused).
    pub registries: Arc<registries::RegistryClients>,
    /// Uploads in progress per key (`uploads::limit`).
    pub uploads: Arc<uploads::UploadSlots>,
    /// Keys and routes for invocations, kept true by Postgres' announcements.
    pub hot: Arc<hot_cache::HotCache>,
    /// This process's metrics registry, rendered at `/metrics`.
    pub metrics: slipway_shared::metrics::PrometheusHandle,
}

impl AppState {
    pub fn new(pool: PgPool, store: Arc<ArchiveStore>, config: ApiConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Functions answer on loopback or a private network; a proxy would be wrong here.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            // Functions are a hop or two away: a connection that takes longer is to an address
            // nobody holds any more (a node cut off), not to a slow function.
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()
            .context("building the invocation client")?;
        let invoke = routes::invoke::client();
        let events = events::EventRecorder::start(pool.clone(), config.record_events);
        if let Some(stream) = &config.event_stream {
            event_stream::start(pool.clone(), stream.clone());
        }
        let pool_for_cache = pool.clone();
        let registries = Arc::new(registries::RegistryClients::new(&config, http.clone())?);
        Ok(Self(Arc::new(Shared {
            pool,
            store,
            config: Arc::new(config),
            http,
            invoke,
            invocations: Arc::default(),
            events,
            registries,
            uploads: Arc::default(),
            hot: hot_cache::HotCache::start(pool_for_cache),
            metrics: slipway_shared::metrics::install()?,
        })))
    }
}

pub fn router(state: AppState) -> Router {
    let (routes, mut document) = api_routes(&state).split_for_parts();
    openapi::use_openapi_path_syntax(&mut document);
    let api = routes
        .merge(
            utoipa_swagger_ui::SwaggerUi::new(openapi::SWAGGER_UI_PATH)
                .url(openapi::DOCUMENT_PATH, document),
        )
        .merge(console::router())
        .fallback(|| async {
            error::error_response(
                http::StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route",
            )
        })
        .layer(middleware::from_fn(close_after_oversized_body))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state.clone());
    // Invocations, on either origin, are taken before the API's routing and layers: they are
    // the one hot path (see `routes::invoke::Invocations`). The invoke routes stay in the API
    // for its document and for the methods the hot path leaves to them.
    Router::new().fallback_service(routes::invoke::Invocations::new(state, api))
}

/// The API's routes with their operations: `routes!` adds both at once (see `openapi`).
fn api_routes(state: &AppState) -> OpenApiRouter<AppState> {
    use routes::{
        aliases, deletions, deployments, events, functions, git, health, integrity, invoke, keys,
        metrics, ops, runtime, schedules, v1_functions,
    };
    // Room for the archive plus the other form fields.
    let archive_limit = state.config.archive_limits.max_compressed_bytes;
    let upload_limit = archive_limit as usize + 64 * 1024;
    let oversized_upload = OversizedBody {
        code: "archive_too_large",
        message: format!("the archive exceeds {archive_limit} bytes compressed"),
    };
    let changes = |route: UtoipaMethodRouter<AppState>| route.map(|r| changes_function(state, r));
    let verified = |route: UtoipaMethodRouter<AppState>| route.map(|r| signed(state, r));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(functions::list))
        .routes(changes(routes!(functions::init)))
        .routes(changes(routes!(deployments::deploy)).map(|route| {
            route
                // Outside the signature and idempotency checks, which need the body's digests:
                // the upload goes to disk once, hashed on the way, and never sits in memory.
                .layer::<_, Infallible>(middleware::from_fn(body::spool))
                // Outside the spooling: an upload without a live key, or past its key's
                // concurrent uploads, is refused before anything is read.
                .layer::<_, Infallible>(middleware::from_fn_with_state(
                    state.clone(),
                    uploads::limit,
                ))
                .layer::<_, Infallible>(Extension(oversized_upload))
                .layer(DefaultBodyLimit::max(upload_limit))
        }))
        .routes(routes!(deletions::pending))
        .routes(routes!(functions::get))
        .routes(changes(routes!(deletions::delete)))
        .routes(verified(routes!(integrity::verify)))
        .routes(routes!(deletions::status))
        .routes(changes(routes!(deletions::cancel)))
        .routes(routes!(functions::deployments))
        .routes(changes(routes!(functions::rollback)))
        .routes(routes!(aliases::list))
        .routes(changes(routes!(aliases::create)))
        .routes(routes!(aliases::get))
        .routes(changes(routes!(aliases::point)))
        .routes(changes(routes!(aliases::delete)))
        .routes(routes!(keys::list))
        .routes(verified(routes!(keys::create)))
        .routes(verified(routes!(keys::revoke)))
        .routes(routes!(git::list))
        .routes(changes(routes!(git::create)))
        .routes(changes(routes!(git::delete)))
        .routes(routes!(git::webhook).map(webhook))
        .routes(routes!(git::binding_webhook).map(webhook))
        .routes(routes!(deployments::logs))
        .routes(routes!(schedules::list))
        .routes(verified(routes!(schedules::run)))
        .routes(routes!(metrics::scrape))
        .routes(routes!(ops::queues))
        .routes(routes!(ops::jobs))
        .routes(routes!(ops::job))
        .routes(verified(routes!(ops::retry_matching)))
        .routes(verified(routes!(ops::cancel_matching)))
        .routes(routes!(ops::dead_letters))
        .routes(verified(routes!(ops::redrive)))
        .routes(verified(routes!(ops::pause)))
        .routes(verified(routes!(ops::resume)))
        .routes(verified(routes!(ops::retry)))
        .routes(verified(routes!(ops::cancel)))
        .routes(routes!(events::list))
        .routes(changes(routes!(events::create)))
        .routes(routes!(events::get))
        .routes(changes(routes!(runtime::update)))
        .routes(routes!(runtime::get))
        .routes(changes(routes!(runtime::restart)))
        .routes(changes(routes!(runtime::recycle)))
        .routes(routes!(v1_functions::list))
        .routes(changes(routes!(v1_functions::create)))
        .routes(routes!(v1_functions::get))
        .routes(changes(routes!(v1_functions::delete)))
        .routes(changes(routes!(v1_functions::build)))
        .routes(changes(routes!(v1_functions::deploy)))
        .routes(routes!(invoke::invoke_root))
        // The root with a trailing slash is the root too (a wildcard never matches nothing).
        .routes(routes!(invoke::invoke_root_slash))
        .routes(routes!(invoke::invoke_path))
}

/// A provider's delivery: bounded before anything reads it, and counted whatever its answer.
fn webhook(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        .layer(middleware::from_fn(routes::git::count_delivery))
}

/// Every route that creates or changes a function goes through here: a signature, when present,
/// is verified (the use case then calls `signing::require_signature`), then `Idempotency-Key` is
/// honoured. Put a route's `DefaultBodyLimit` outside this (`.layer(..)` after the call): both
/// middlewares buffer the body within that limit. GET handlers merged into the same path are
/// passed through by both.
fn changes_function(state: &AppState, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    signed(
        state,
        route.layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent,
        )),
    )
}

/// Verifies a signature when the request carries one; unsigned requests pass untouched.
fn signed(state: &AppState, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.layer(middleware::from_fn_with_state(
        state.clone(),
        signing::verify,
    ))
}

async fn log_internal_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    report_internal_error(&method, &uri, &response);
    response
}

/// The one place 500s are logged, with the error the handler attached; the path only, since a
/// query string may carry what its caller meant for the function alone.
pub(crate) fn report_internal_error(method: &http::Method, uri: &http::Uri, response: &Response) {
    if let Some(InternalErrorReport(error)) = response.extensions().get::<InternalErrorReport>() {
        error!(%method, path = uri.path(), error = ?error, "request failed");
    }
}

async fn close_after_oversized_body(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    close_if_oversized(&mut response);
    response
}

/// A body refused for its size was not read to its end, so the connection cannot carry another
/// request: say so (RFC 9110 §9.6), or a pooled client sends its next request on a connection
/// the server is closing.
pub(crate) fn close_if_oversized(response: &mut Response) {
    if response.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let events = Arc::clone(&state.events);
    // Without it a small answer written in two pieces waits for the client's delayed ACK
    // (Nagle): 40 ms on a kept-alive connection, which is every pooled client's.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
        }
    });
    // The peer's address goes to functions in X-Forwarded-For and Forwarded.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    // What the event writer still holds goes out before the process does.
    events.flush().await;
    Ok(())
}
