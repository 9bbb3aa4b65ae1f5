//! Slipway's REST API (axum): accepts function code, commits durable jobs, answers reads, and
//! proxies invocations to the active container.
//!
//! Architecture invariant: the api never talks to BuildKit, the registry or the runtime; its
//! only data-plane duty is forwarding invocations to an endpoint the worker recorded.

pub mod auth;
pub mod deletion;
pub mod deploy;
pub mod error;
pub mod rollback;
pub mod routes;
pub mod runtime;

use std::sync::Arc;

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    middleware::{self, Next},
    response::Response,
    routing::{any, get, post, put},
};
use slipway_shared::{config::ApiConfig, store::ArchiveStore};
use sqlx::PgPool;
use tower_http::trace::TraceLayer;
use tracing::error;

use crate::error::InternalErrorReport;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: Arc<ArchiveStore>,
    pub config: Arc<ApiConfig>,
    pub http: reqwest::Client,
}

impl AppState {
    pub fn new(pool: PgPool, store: Arc<ArchiveStore>, config: ApiConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Functions answer on loopback or a private network; a proxy would be wrong here.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the invocation client")?;
        Ok(Self {
            pool,
            store,
            config: Arc::new(config),
            http,
        })
    }
}

pub fn router(state: AppState) -> Router {
    // Room for the archive plus the other form fields.
    let upload_limit = state.config.archive_limits.max_compressed_bytes as usize + 64 * 1024;
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/api/functions", get(routes::functions::list))
        .route("/api/functions/init", post(routes::functions::init))
        .route(
            "/api/functions/deploy",
            post(routes::deployments::deploy).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/api/functions/pending-deletions",
            get(routes::deletions::pending),
        )
        .route(
            "/api/functions/{id}",
            get(routes::functions::get).delete(routes::deletions::delete),
        )
        .route(
            "/api/functions/{id}/verify",
            post(routes::integrity::verify),
        )
        .route(
            "/api/functions/{id}/deletion-status",
            get(routes::deletions::status),
        )
        .route(
            "/api/functions/{id}/cancel-deletion",
            post(routes::deletions::cancel),
        )
        .route(
            "/api/functions/{id}/deployments",
            get(routes::functions::deployments),
        )
        .route(
            "/api/functions/{id}/rollback",
            post(routes::functions::rollback),
        )
        .route("/api/deployments/{id}/logs", get(routes::deployments::logs))
        .route("/api/v1/functions/{id}", put(routes::runtime::update))
        .route("/api/v1/functions/{id}/runtime", get(routes::runtime::get))
        .route(
            "/api/v1/functions/{id}/runtime/restart",
            post(routes::runtime::restart),
        )
        .route(
            "/api/v1/functions/{id}/runtime/recycle",
            post(routes::runtime::recycle),
        )
        .route(
            "/api/v1/functions/invoke/{id}",
            any(routes::invoke::invoke_root),
        )
        .route(
            "/api/v1/functions/invoke/{id}/{*path}",
            any(routes::invoke::invoke_path),
        )
        .fallback(|| async {
            error::error_response(
                http::StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route",
            )
        })
        .layer(middleware::from_fn(log_internal_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")
}
