//! Slipway's REST API (axum): accepts function code, commits durable jobs, answers reads, and
//! proxies invocations to the active container.
//!
//! Architecture invariant: the api never talks to BuildKit or the runtime, and only reads the
//! registry (`POST /api/functions/{id}/verify`); its only data-plane duty is forwarding
//! invocations to an endpoint the worker recorded.

pub mod auth;
pub mod body;
pub mod console;
pub mod deletion;
pub mod deploy;
pub mod error;
pub mod events;
pub mod git_push;
pub mod idempotency;
pub mod invocations;
pub mod registries;
pub mod rollback;
pub mod routes;
pub mod runtime;
pub mod signing;
pub mod uploads;
pub mod wake;
pub mod webhooks;

use std::{convert::Infallible, sync::Arc};

use anyhow::Context;
use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, Request},
    middleware::{self, Next},
    response::Response,
    routing::{MethodRouter, any, delete, get, post, put},
};
use slipway_shared::{config::ApiConfig, store::ArchiveStore};
use sqlx::PgPool;
use tower_http::trace::TraceLayer;
use tracing::error;

use crate::{body::OversizedBody, error::InternalErrorReport};

/// Deliveries past this are refused before anything reads them. GitHub caps payloads at 25 MB;
/// a push of that size is not a deploy we want.
const WEBHOOK_BODY_LIMIT: usize = 5 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: Arc<ArchiveStore>,
    pub config: Arc<ApiConfig>,
    pub http: reqwest::Client,
    pub invocations: Arc<invocations::InvocationMarks>,
    pub events: Arc<events::EventRecorder>,
    /// The registries verification reads, one client per host (its login and tokens reused).
    pub registries: Arc<registries::RegistryClients>,
    /// Uploads in progress per key (`uploads::limit`).
    pub uploads: Arc<uploads::UploadSlots>,
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
        let events = events::EventRecorder::start(pool.clone(), config.record_events);
        let registries = Arc::new(registries::RegistryClients::new(&config, http.clone())?);
        Ok(Self {
            pool,
            store,
            config: Arc::new(config),
            http,
            invocations: Arc::default(),
            events,
            registries,
            uploads: Arc::default(),
            metrics: slipway_shared::metrics::install()?,
        })
    }
}

pub fn router(state: AppState) -> Router {
    // Room for the archive plus the other form fields.
    let archive_limit = state.config.archive_limits.max_compressed_bytes;
    let upload_limit = archive_limit as usize + 64 * 1024;
    let oversized_upload = OversizedBody {
        code: "archive_too_large",
        message: format!("the archive exceeds {archive_limit} bytes compressed"),
    };
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/api/functions", get(routes::functions::list))
        .route(
            "/api/functions/init",
            changes_function(&state, post(routes::functions::init)),
        )
        .route(
            "/api/functions/deploy",
            changes_function(&state, post(routes::deployments::deploy))
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
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/api/functions/pending-deletions",
            get(routes::deletions::pending),
        )
        .route(
            "/api/functions/{id}",
            get(routes::functions::get)
                .merge(changes_function(&state, delete(routes::deletions::delete))),
        )
        .route(
            "/api/functions/{id}/verify",
            signed(&state, post(routes::integrity::verify)),
        )
        .route(
            "/api/functions/{id}/deletion-status",
            get(routes::deletions::status),
        )
        .route(
            "/api/functions/{id}/cancel-deletion",
            changes_function(&state, post(routes::deletions::cancel)),
        )
        .route(
            "/api/functions/{id}/deployments",
            get(routes::functions::deployments),
        )
        .route(
            "/api/functions/{id}/rollback",
            changes_function(&state, post(routes::functions::rollback)),
        )
        .route(
            "/api/keys",
            get(routes::keys::list).merge(signed(&state, post(routes::keys::create))),
        )
        .route(
            "/api/keys/{id}",
            signed(&state, delete(routes::keys::revoke)),
        )
        .route(
            "/api/functions/{id}/git-bindings",
            get(routes::git::list).merge(changes_function(&state, post(routes::git::create))),
        )
        .route(
            "/api/functions/{id}/git-bindings/{binding_id}",
            changes_function(&state, delete(routes::git::delete)),
        )
        .route(
            "/api/webhooks/{provider}",
            webhook(post(routes::git::webhook)),
        )
        .route(
            "/api/webhooks/{provider}/{binding_id}",
            webhook(post(routes::git::binding_webhook)),
        )
        .route("/api/deployments/{id}/logs", get(routes::deployments::logs))
        .route("/api/schedules", get(routes::schedules::list))
        .route("/metrics", get(routes::metrics::scrape))
        .route("/api/ops/queues", get(routes::ops::queues))
        .route("/api/ops/jobs", get(routes::ops::jobs))
        .route("/api/ops/jobs/{id}", get(routes::ops::job))
        .route(
            "/api/ops/jobs/retry",
            signed(&state, post(routes::ops::retry_matching)),
        )
        .route(
            "/api/ops/jobs/cancel",
            signed(&state, post(routes::ops::cancel_matching)),
        )
        .route("/api/ops/dead-letters", get(routes::ops::dead_letters))
        .route(
            "/api/ops/dead-letters/redrive",
            signed(&state, post(routes::ops::redrive)),
        )
        .route(
            "/api/ops/queues/{name}/pause",
            signed(&state, post(routes::ops::pause)),
        )
        .route(
            "/api/ops/queues/{name}/resume",
            signed(&state, post(routes::ops::resume)),
        )
        .route(
            "/api/ops/jobs/{id}/retry",
            signed(&state, post(routes::ops::retry)),
        )
        .route(
            "/api/ops/jobs/{id}/cancel",
            signed(&state, post(routes::ops::cancel)),
        )
        .route("/api/v3/events", get(routes::events::list))
        .route("/api/v3/events/{id}", get(routes::events::get))
        .route(
            "/api/schedules/{name}/run",
            signed(&state, post(routes::schedules::run)),
        )
        .route(
            "/api/v1/functions/{id}",
            changes_function(&state, put(routes::runtime::update)),
        )
        .route("/api/v1/functions/{id}/runtime", get(routes::runtime::get))
        .route(
            "/api/v1/functions/{id}/runtime/restart",
            changes_function(&state, post(routes::runtime::restart)),
        )
        .route(
            "/api/v1/functions/{id}/runtime/recycle",
            changes_function(&state, post(routes::runtime::recycle)),
        )
        .route(
            "/api/v1/functions/invoke/{id}",
            any(routes::invoke::invoke_root),
        )
        // The root with a trailing slash is the root too (a wildcard never matches nothing).
        .route(
            "/api/v1/functions/invoke/{id}/",
            any(routes::invoke::invoke_root),
        )
        .route(
            "/api/v1/functions/invoke/{id}/{*path}",
            any(routes::invoke::invoke_path),
        )
        .merge(console::router())
        .fallback(|| async {
            error::error_response(
                http::StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route",
            )
        })
        // Outermost but for logging: a function's own origin never reaches an API route.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::invoke::own_origin,
        ))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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

/// The one place 500s are logged, with the error the handler attached.
async fn log_internal_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    if let Some(InternalErrorReport(error)) = response.extensions().get::<InternalErrorReport>() {
        error!(%method, %uri, error = ?error, "request failed");
    }
    response
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
