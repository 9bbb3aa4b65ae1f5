//! Invocation (seed 003): `ANY /api/v1/functions/invoke/{id}[/{*path}]` is proxied to the active
//! instance's `/` (or `/path`), passing method, query, headers, body and status through, as an
//! HTTP intermediary should (RFC 9110 §7.6): the path and query go on byte for byte as the caller
//! sent them (`%3F` stays `%3F`; `…/{id}` and `…/{id}/` are both the root), hop-by-hop headers
//! and those `Connection` names stay behind both ways, and the caller's address is appended to
//! `X-Forwarded-For` and `Forwarded`. This route is one origin shared by every tenant and the
//! platform, so cookies do not cross it: the caller's `Cookie` is not forwarded and a function's
//! `Set-Cookie` is dropped (a function's cookie would otherwise be the API origin's, readable
//! and writable by every other function). Logs carry paths, never query strings.
//!
//! With `SLIPWAY_INVOKE_DOMAIN` set, each function also has an origin of its own,
//! `<function id>.<domain>` (as Lambda function URLs and Cloud Run give each function a host):
//! there every path is the function's, and its cookies pass both ways, since no one else's
//! pages share that origin. API routes are not served on those hosts.
//!
//! This is the api's one data-plane duty. Each routed invocation is recorded as an event
//! (`events`), off the request path.

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::Utc;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper_util::{
    client::legacy::connect::HttpConnector,
    rt::{TokioExecutor, TokioTimer},
};
use slipway_shared::{
    db::{self, events::EventRow},
    domain::FunctionStatus,
    metrics,
};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::{AppState, auth::Caller, error::ApiError, openapi::FunctionId, wake};

/// Lambda's synchronous payload limit.
const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-slipway-request-id";
pub const EVENT_ID_HEADER: &str = "x-slipway-event-id";
const FC_REQUEST_ID_HEADER: &str = "x-fc-request-id";

/// Which origin an invocation came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `/api/v1/functions/invoke/{id}`: the API's own origin, shared by every tenant.
    Shared,
    /// `<function id>.<SLIPWAY_INVOKE_DOMAIN>`: the function's alone.
    Own,
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the caller's platform
/// credentials, which the function must never see, and, on the shared origin, cookies, which
/// belong to that origin (see the module's doc).
fn forwardable(name: &HeaderName, origin: Origin) -> bool {
    if origin == Origin::Own && matches!(name.as_str(), "cookie" | "set-cookie") {
        return true;
    }
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "content-length"
            | "cookie"
            | "set-cookie"
    )
}

/// The header names a message's `Connection` header lists: options of that one hop, which an
/// intermediary removes along with `Connection` itself (RFC 9110 §7.6.1).
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// The headers of `from` that go on to the next hop.
fn end_to_end(from: &HeaderMap, origin: Origin) -> HeaderMap {
    let options = connection_options(from);
    let mut headers = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if forwardable(name, origin) && !options.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Appends the caller to `X-Forwarded-For` and `Forwarded` (RFC 7239), keeping what earlier
/// proxies wrote: the function sees the whole chain, the last entry being the one we vouch for.
fn add_forwarding(headers: &mut HeaderMap, peer: Option<IpAddr>, host: Option<&HeaderValue>) {
    use std::fmt::Write;
    let Some(peer) = peer else {
        return;
    };
    append_entry(headers, X_FORWARDED_FOR, peer.to_string());
    let mut forwarded = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = match peer {
        IpAddr::V4(v4) => write!(forwarded, "for={v4};proto=http"),
        IpAddr::V6(v6) => write!(forwarded, "for=\"[{v6}]\";proto=http"),
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok())
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        let _ = write!(forwarded, ";host=\"{host}\"");
    }
    append_entry(headers, header::FORWARDED, forwarded);
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Sets `name` to `entry`, after what the header already lists.
fn append_entry(headers: &mut HeaderMap, name: HeaderName, entry: String) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {entry}"),
        _ => entry,
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(name, value);
    }
}

/// Keep-alive connections to the functions' instances, pooled per endpoint.
pub type InvokeClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

pub fn client() -> InvokeClient {
    let mut connector = HttpConnector::new();
    // A small request written in two pieces would otherwise wait for the function's delayed ACK.
    connector.set_nodelay(true);
    // Functions are a hop or two away: a connection that takes longer is to an address nobody
    // holds any more (a node cut off), not to a slow function.
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

const INVOKE_PREFIX: &str = "/api/v1/functions/invoke/";

/// What follows `/api/v1/functions/invoke/{id}` in the path exactly as the caller sent it
/// (still percent-encoded), as the function's own path: always starting with `/`.
fn function_path(raw: &str, id: &str) -> String {
    let rest = raw
        .strip_prefix(INVOKE_PREFIX)
        .and_then(|r| r.strip_prefix(id))
        .unwrap_or_default();
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

/// Calls the function at its root: method, query, headers and body pass through, and so does
/// its answer.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/api/v1/functions/invoke/{id}",
    tag = "invoke",
    params(FunctionId),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Passed to the function as sent"),
    responses(
        (status = "default", description = "The function's own answer, status and headers as it gave them (but `Set-Cookie`); Slipway's refusals (404 `function_not_found`, 503 `function_waking` with `Retry-After`, 502 when it does not answer, …) carry the error envelope", content_type = "*/*"),
    )
)]
pub async fn invoke_root(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    shared_origin(state, caller, request).await
}

/// The root with a trailing slash is the root too (a wildcard never matches nothing).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/api/v1/functions/invoke/{id}/",
    tag = "invoke",
    params(FunctionId),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Passed to the function as sent"),
    responses(
        (status = "default", description = "As for `/api/v1/functions/invoke/{id}`", content_type = "*/*"),
    )
)]
pub async fn invoke_root_slash(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    shared_origin(state, caller, request).await
}

/// Calls the function at `/{path}`, byte for byte as sent (`%3F` stays `%3F`).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/api/v1/functions/invoke/{id}/{*path}",
    tag = "invoke",
    params(FunctionId, ("path" = String, Path, description = "The function's own path, slashes included")),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Passed to the function as sent"),
    responses(
        (status = "default", description = "As for `/api/v1/functions/invoke/{id}`", content_type = "*/*"),
    )
)]
pub async fn invoke_path(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    shared_origin(state, caller, request).await
}

/// The function's id is read from the path as sent: the rest of it goes to the function
/// undecoded, so a byte axum's `Path` would refuse (`%FF`) is the function's to judge.
async fn shared_origin(
    state: AppState,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let raw_id = request
        .uri()
        .path()
        .strip_prefix(INVOKE_PREFIX)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let raw_id = raw_id.as_str();
    let (id, qualifier) = parse_target(raw_id)?;
    let path = function_path(request.uri().path(), raw_id);
    Ok(proxy(state, caller, id, qualifier, path, Origin::Shared, request).await)
}

/// Which version an invocation asks for: `{id}@{alias}` or `{id}@{N}` (`@` may come
/// percent-encoded, `%40`); none asks for the active version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Qualifier {
    Alias(String),
    Version(i32),
}

impl Qualifier {
    /// The key of its cached route.
    fn key(&self) -> String {
        match self {
            Self::Alias(name) => name.clone(),
            Self::Version(version) => version.to_string(),
        }
    }

    /// As `db::aliases::qualified_route` takes it: the alias, or the version.
    fn parts(&self) -> (Option<&str>, Option<i32>) {
        match self {
            Self::Alias(name) => (Some(name.as_str()), None),
            Self::Version(version) => (None, Some(*version)),
        }
    }

    fn not_found(&self) -> ApiError {
        match self {
            Self::Alias(name) => crate::aliases::alias_not_found(name),
            Self::Version(version) => ApiError::not_found(
                "version_not_found",
                format!("the function has no version {version}"),
            ),
        }
    }
}

/// The function and the qualifier in the first segment of an invocation's path.
fn parse_target(segment: &str) -> Result<(Uuid, Option<Qualifier>), ApiError> {
    let split = segment
        .split_once('@')
        .or_else(|| segment.split_once("%40"));
    let (raw_id, qualifier) = match split {
        Some((id, qualifier)) => (id, Some(qualifier)),
        None => (segment, None),
    };
    let id = Uuid::parse_str(raw_id).map_err(|_| ApiError::function_not_found())?;
    let Some(qualifier) = qualifier else {
        return Ok((id, None));
    };
    let qualifier = if !qualifier.is_empty() && qualifier.bytes().all(|b| b.is_ascii_digit()) {
        let version = qualifier
            .parse::<i32>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                ApiError::not_found(
                    "version_not_found",
                    format!("the function has no version {qualifier}"),
                )
            })?;
        Qualifier::Version(version)
    } else {
        crate::aliases::check_name(qualifier)
            .map_err(|_| crate::aliases::alias_not_found(qualifier))?;
        Qualifier::Alias(qualifier.to_owned())
    };
    Ok((id, Some(qualifier)))
}

/// The function a request's `Host` names under `domain` (`<id>.<domain>[:port]`), if it names
/// one: `Some(None)` for a host under the domain whose label is no function id.
fn function_host(host: &str, domain: &str) -> Option<Option<Uuid>> {
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    Some(Uuid::parse_str(label).ok().filter(|_| !label.contains('.')))
}

/// Invocations are served ahead of the API's router: a request for
/// `<function id>.<SLIPWAY_INVOKE_DOMAIN>` (any path) or for `/api/v1/functions/invoke/{id}…`
/// (with a method the invoke routes take) goes straight to the proxy, everything else to the
/// API. An invocation is the one request a busy caller sends thousands of a second, and the
/// router's matching, its tracing span and its layers (each a boxed future, moved and cloned per
/// request) were a measurable part of the proxy's cost (`bench/invoke-latency.sh`); they add
/// nothing to it: the proxy logs what it refuses, records an event per call and closes a
/// connection whose body it did not read.
#[derive(Clone)]
pub struct Invocations {
    state: AppState,
    api: axum::Router,
}

impl Invocations {
    pub fn new(state: AppState, api: axum::Router) -> Self {
        Self { state, api }
    }
}

impl tower::Service<Request> for Invocations {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let domain = self.state.config.invoke_domain.as_deref();
        let Some(origin) = invocation_origin(domain, &request) else {
            return Box::pin(tower::ServiceExt::oneshot(self.api.clone(), request));
        };
        let state = self.state.clone();
        Box::pin(async move {
            let method = request.method().clone();
            let uri = request.uri().clone();
            let mut response = invoke(state, origin, request)
                .await
                .unwrap_or_else(IntoResponse::into_response);
            crate::close_if_oversized(&mut response);
            crate::report_internal_error(&method, &uri, &response);
            Ok(response)
        })
    }
}

/// Whether a request is an invocation, and on which origin.
fn invocation_origin(invoke_domain: Option<&str>, request: &Request) -> Option<Invocation> {
    if let Some(domain) = invoke_domain {
        // HTTP/2 and absolute-form requests carry the host in the URI, HTTP/1.1 in Host.
        let host = request.uri().host().or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        if let Some(named) = host.and_then(|host| function_host(host, domain)) {
            return Some(named.map_or(Invocation::UnknownHost, Invocation::OwnOrigin));
        }
    }
    let first_segment = request
        .uri()
        .path()
        .strip_prefix(INVOKE_PREFIX)?
        .split('/')
        .next()
        .unwrap_or_default();
    // An empty id, or a method the invoke routes do not take, is the API's to refuse.
    let invoked = !first_segment.is_empty()
        && matches!(
            *request.method(),
            http::Method::GET
                | http::Method::POST
                | http::Method::PUT
                | http::Method::PATCH
                | http::Method::DELETE
                | http::Method::HEAD
                | http::Method::OPTIONS
        );
    invoked.then_some(Invocation::SharedOrigin)
}

/// How an invocation names its function.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    /// By its path on the API's origin.
    SharedOrigin,
    /// By its host: the function's own origin.
    OwnOrigin(Uuid),
    /// A host under the invoke domain that names no function.
    UnknownHost,
}

async fn invoke(
    state: AppState,
    invocation: Invocation,
    request: Request,
) -> Result<Response, ApiError> {
    if let Invocation::UnknownHost = invocation {
        return Err(ApiError::function_not_found());
    }
    // Nothing after the proxy reads the caller from the request's extensions.
    let caller =
        crate::auth::authenticate(&state, crate::auth::bearer_key(request.headers())?).await?;
    match invocation {
        Invocation::SharedOrigin => shared_origin(state, caller, request).await,
        Invocation::OwnOrigin(id) => {
            let path = request.uri().path().to_owned();
            Ok(proxy(state, caller, id, None, path, Origin::Own, request).await)
        }
        Invocation::UnknownHost => Err(ApiError::function_not_found()),
    }
}

/// The futures of the route lookups below are kilobytes each; they are boxed where they are
/// awaited, so that only a call that misses the cache pays for them, not every invocation's
/// future (which is allocated and copied per call).
async fn route_from_database(
    state: &AppState,
    caller: Caller,
    id: Uuid,
) -> Result<Option<db::deployments::Route>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(db::deployments::route(&mut conn, caller.user_id, id).await?)
}

async fn qualified_route_from_database(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    alias: Option<&str>,
    version: Option<i32>,
) -> Result<Option<db::aliases::QualifiedRoute>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(db::aliases::qualified_route(&mut conn, caller.user_id, id, alias, version).await?)
}

/// The endpoint of the function's active instance. An Inactive function is woken and the
/// request waits for it (up to `SLIPWAY_WAKE_TIMEOUT`, then 503 with `Retry-After`).
async fn resolve(state: &AppState, caller: Caller, id: Uuid) -> Result<Target, ApiError> {
    let started = std::time::Instant::now();
    loop {
        let cached = state.hot.cached_route(caller.user_id, id);
        metrics::route_looked_up(cached.is_some());
        let ticket = state.hot.ticket();
        let route = match cached.clone() {
            Some(route) => route,
            None => std::sync::Arc::new(
                Box::pin(route_from_database(state, caller, id))
                    .await?
                    .ok_or_else(ApiError::function_not_found)?,
            ),
        };
        match serving(&route)? {
            Serving::Ready(endpoint) => {
                // Only a route that serves is kept: one waking changes within moments.
                if cached.is_none() {
                    state.hot.store_route(
                        ticket,
                        caller.user_id,
                        id,
                        std::sync::Arc::clone(&route),
                    );
                }
                return Ok(Target {
                    endpoint,
                    deployment_id: route.deployment_id,
                    version: route.version,
                    version_instance: false,
                });
            }
            Serving::Waking => {}
            Serving::Asleep => Box::pin(wake::request(state, id)).await?,
        }
        if started.elapsed() >= state.config.wake_timeout {
            return Err(ApiError::RetryLater {
                code: "function_waking",
                message: format!(
                    "the function was Inactive and is starting; it did not answer within {:?}",
                    state.config.wake_timeout
                ),
                retry_after_secs: 5,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The endpoint of the instance of the version `qualifier` names, when that version is not the
/// active one: started on demand (`wake::request_version`, the invocation waits as for a wake)
/// and released when idle. The active version, however named, is served as without a qualifier.
async fn resolve_version(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    qualifier: &Qualifier,
) -> Result<Target, ApiError> {
    let started = std::time::Instant::now();
    let key = qualifier.key();
    let (alias, version) = qualifier.parts();
    let mut requested = false;
    // A split alias draws its version once per call, not again while it waits for a start.
    let mut drawn = false;
    loop {
        let cached = state.hot.cached_qualified(caller.user_id, id, &key);
        metrics::route_looked_up(cached.is_some());
        let ticket = state.hot.ticket();
        let route = match cached.clone() {
            Some(route) => route,
            None => std::sync::Arc::new(
                Box::pin(qualified_route_from_database(
                    state, caller, id, alias, version,
                ))
                .await?
                .ok_or_else(ApiError::function_not_found)?,
            ),
        };
        refusal(route.function_status, route.enabled)?;
        // An alias that splits its calls: this one may go to the other version (a version
        // number never splits, so this recurses once at most).
        if let (Some(other), Some(weight)) = (route.additional_version, route.additional_weight)
            && !std::mem::replace(&mut drawn, true)
            && rand::random::<f64>() < weight
        {
            return Box::pin(resolve_version(
                state,
                caller,
                id,
                &Qualifier::Version(other),
            ))
            .await;
        }
        let (Some(deployment_id), Some(version)) = (route.deployment_id, route.version) else {
            return Err(qualifier.not_found());
        };
        let keep = |route: &std::sync::Arc<db::aliases::QualifiedRoute>| {
            if cached.is_none() {
                state.hot.store_qualified(
                    ticket,
                    caller.user_id,
                    id,
                    &key,
                    std::sync::Arc::clone(route),
                );
            }
        };
        if route.is_active {
            keep(&route);
            return Box::pin(resolve(state, caller, id)).await;
        }
        if route.pruned {
            return Err(ApiError::new(
                StatusCode::GONE,
                "version_pruned",
                format!("version {version} is past the retention window; its image is gone"),
            ));
        }
        if !route.has_image {
            return Err(ApiError::conflict(
                "version_not_built",
                format!(
                    "version {version} has no image (it is {}); only a built version can serve",
                    route
                        .deployment_status
                        .map_or_else(|| "unknown".to_owned(), |s| s.to_string())
                ),
            ));
        }
        match (route.instance_state.as_deref(), &route.instance_endpoint) {
            (Some("ready"), Some(endpoint)) => {
                keep(&route);
                return Ok(Target {
                    endpoint: endpoint.clone(),
                    deployment_id: Some(deployment_id),
                    version: Some(version),
                    version_instance: true,
                });
            }
            (Some("failed"), _) if requested => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "version_failed",
                    format!(
                        "version {version} did not start: {}",
                        route
                            .instance_reason
                            .as_deref()
                            .unwrap_or("no reason recorded")
                    ),
                ));
            }
            (Some("starting"), _) => {}
            _ => {
                Box::pin(wake::request_version(state, id, deployment_id)).await?;
                requested = true;
            }
        }
        if started.elapsed() >= state.config.wake_timeout {
            return Err(ApiError::RetryLater {
                code: "function_waking",
                message: format!(
                    "version {version} is starting; it did not answer within {:?}",
                    state.config.wake_timeout
                ),
                retry_after_secs: 5,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether the instance a request was sent to no longer serves what was asked for: the route now
/// leads elsewhere, or nowhere yet.
async fn instance_lost(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    qualifier: Option<&Qualifier>,
    endpoint: &str,
) -> bool {
    let Ok(mut conn) = state.pool.acquire().await else {
        return false;
    };
    if let Some(qualifier) = qualifier {
        let (alias, version) = qualifier.parts();
        match db::aliases::qualified_route(&mut conn, caller.user_id, id, alias, version).await {
            Ok(Some(route)) if !route.is_active => {
                return route.instance_endpoint.as_deref() != Some(endpoint)
                    || route.instance_state.as_deref() != Some("ready");
            }
            Ok(Some(_)) => {}
            _ => return false,
        }
    }
    match db::deployments::route(&mut conn, caller.user_id, id).await {
        Ok(Some(route)) => route.endpoint.as_deref() != Some(endpoint) || route.state != "Active",
        _ => false,
    }
}

/// A version instance refused a connection: it is recorded as lost (the next resolution starts
/// another, and the reaper removes the dead one) and the cached route to it is dropped at once,
/// not when the notification arrives.
async fn forget_version_instance(
    state: &AppState,
    function_id: Uuid,
    deployment_id: Uuid,
    endpoint: &str,
) -> Result<(), ApiError> {
    let mut conn = state.pool.acquire().await?;
    if db::aliases::mark_lost(&mut conn, deployment_id, endpoint).await? {
        warn!(%function_id, %deployment_id, endpoint, "a version instance stopped accepting connections; starting another");
    }
    state.hot.forget_function(function_id);
    Ok(())
}

/// Whether anything still listens at `endpoint`. On an engine that moves instances, a request
/// cut off mid-way by an instance whose node is stopping or gone finds nothing listening there
/// (refused or unanswered), well before the engine reports the task lost; a function that broke
/// the connection itself still listens.
async fn accepts_connections(endpoint: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(endpoint);
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// The instance an invocation goes to.
struct Target {
    endpoint: String,
    deployment_id: Option<Uuid>,
    version: Option<i32>,
    /// A version instance (an alias's), not the function's own.
    version_instance: bool,
}

/// Where a function stands for an invocation.
enum Serving {
    Ready(String),
    /// Pending with a version to serve: being woken.
    Waking,
    /// Inactive: to be woken.
    Asleep,
}

/// Why a function serves nothing at all, whatever version is asked for: it is being deleted or
/// disabled.
fn refusal(function_status: FunctionStatus, enabled: bool) -> Result<(), ApiError> {
    match function_status.as_str() {
        "pending_deletion" => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "function_pending_deletion",
                "the function is scheduled for deletion and does not serve; cancel the deletion \
                 (POST /api/functions/{id}/cancel-deletion) to serve it again",
            ));
        }
        "deleted" => return Err(crate::deletion::function_deleted()),
        _ => {}
    }
    if !enabled {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "function_disabled",
            "the function is disabled; enable it with PUT /api/v1/functions/{id} {\"enabled\": true}",
        ));
    }
    Ok(())
}

fn serving(route: &db::deployments::Route) -> Result<Serving, ApiError> {
    refusal(route.function_status, route.enabled)?;
    // Seed 001: only an Active function is invocable; the others say why not.
    match route.state.as_str() {
        "Failed" => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "function_failed",
                format!(
                    "the function is Failed ({}); deploy a new version or roll back",
                    route
                        .state_reason
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            ));
        }
        "Inactive" => return Ok(Serving::Asleep),
        "Pending" if route.endpoint.is_some() => return Ok(Serving::Waking),
        _ => {}
    }
    route.endpoint.clone().map(Serving::Ready).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "function_not_active",
            format!(
                "the function has no active version (status {}); deploy it and wait until it is active",
                route.function_status
            ),
        )
    })
}

/// Every invocation, on either origin, once its caller is known; counted with its answer's
/// status, Slipway's own refusals included.
async fn proxy(
    state: AppState,
    caller: Caller,
    id: Uuid,
    qualifier: Option<Qualifier>,
    path: String,
    origin: Origin,
    request: Request,
) -> Response {
    let started = std::time::Instant::now();
    let response = forward(state, caller, id, qualifier, path, origin, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    metrics::invocation_answered(response.status().as_u16(), started.elapsed());
    response
}

async fn forward(
    state: AppState,
    caller: Caller,
    id: Uuid,
    qualifier: Option<Qualifier>,
    path: String,
    origin: Origin,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = path.as_str();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("invocation bodies are limited to {MAX_REQUEST_BYTES} bytes"),
            )
        })?;
    let request_id = Uuid::new_v4();
    let mut headers = end_to_end(&parts.headers, origin);
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    add_forwarding(&mut headers, peer, parts.headers.get(header::HOST));
    let request_id_value = uuid_header(request_id);
    headers.insert(REQUEST_ID_HEADER, request_id_value.clone());
    // Functions written against seed 002 (Function Compute) read this name.
    headers.insert(FC_REQUEST_ID_HEADER, request_id_value.clone());
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();

    // A request that raced a traffic switch may find the old container already stopped, or one
    // whose node died may find nothing at the recorded address until the engine has placed the
    // task again: nothing reached the function, so resolving the route again and resending is
    // safe for any method.
    // Set at each send: waiting for a wake does not count against the function.
    let mut deadline;
    let mut attempt = 0;
    let mut refused_since: Option<std::time::Instant> = None;
    let mut version_instance_lost = false;
    let mut event = None;
    let upstream = loop {
        attempt += 1;
        let target = match &qualifier {
            None => resolve(&state, caller, id).await?,
            Some(qualifier) => resolve_version(&state, caller, id, qualifier).await?,
        };
        let event = event.get_or_insert_with(|| {
            state.invocations.mark(&state.pool, id);
            if let (true, Some(deployment_id)) = (target.version_instance, target.deployment_id) {
                state.invocations.mark_version(&state.pool, deployment_id);
            }
            Event::start(
                &state,
                caller,
                id,
                &target,
                request_id,
                &parts.method,
                path,
                body.len(),
            )
        });
        let uri = format!("http://{}{path}{query}", target.endpoint);
        let mut upstream = http::Request::new(Full::new(body.clone()));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = http::Uri::from_maybe_shared(Bytes::from(uri)).map_err(|_| {
            ApiError::bad_request("invalid_path", "the path is not a valid request-target")
        })?;
        *upstream.headers_mut() = headers.clone();
        deadline = tokio::time::Instant::now() + state.config.invoke_timeout;
        let sent = tokio::time::timeout_at(deadline, state.invoke.request(upstream)).await;
        match sent {
            Ok(Ok(response)) => break response,
            Ok(Err(e)) if e.is_connect() => {
                // Nothing follows an alias's instance (the placement follower and the OOM watcher
                // follow the functions' own), so a refused connection replaces it.
                if let (true, Some(deployment_id)) = (target.version_instance, target.deployment_id)
                    && !std::mem::replace(&mut version_instance_lost, true)
                {
                    Box::pin(forget_version_instance(
                        &state,
                        id,
                        deployment_id,
                        &target.endpoint,
                    ))
                    .await?;
                    continue;
                }
                let waited = refused_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed();
                let wait = state.config.unreachable_wait;
                if attempt >= 3 && waited >= wait {
                    warn!(endpoint = %target.endpoint, path, error = %e, "function unreachable");
                    if wait.is_zero() {
                        event.fail(502, "function_unreachable");
                        return Err(ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "function_unreachable",
                            "the function's container did not answer",
                        ));
                    }
                    event.fail(503, "function_unreachable");
                    return Err(ApiError::RetryLater {
                        code: "function_unreachable",
                        message: format!(
                            "the function's instance is unreachable and was not placed again within {wait:?}"
                        ),
                        retry_after_secs: 5,
                    });
                }
                // The worker stops the previous version a drain after the switch commits; an
                // api that has not yet heard the switch announced still holds a route to it,
                // so the next attempt asks the database.
                state.hot.forget_route(caller.user_id, id);
                debug!(endpoint = %target.endpoint, path, error = %e, "function endpoint refused the connection; resolving again");
                let backoff = std::time::Duration::from_millis(50 * attempt.min(10));
                tokio::time::sleep(backoff).await;
            }
            Err(_) => {
                event.fail(504, "function_timeout");
                return Err(timed_out(&state));
            }
            Ok(Err(e)) => {
                if Box::pin(instance_lost(
                    &state,
                    caller,
                    id,
                    qualifier.as_ref(),
                    &target.endpoint,
                ))
                .await
                    || (!state.config.unreachable_wait.is_zero()
                        && !Box::pin(accepts_connections(&target.endpoint)).await)
                {
                    // The instance went away while it held the request (its node was cut off
                    // or stopped): the engine has placed it elsewhere since, or nothing
                    // listens at its address any more. Whether the
                    // request reached it is unknown, so it is not sent again; the caller may
                    // retry.
                    debug!(endpoint = %target.endpoint, path, error = %e, "function instance lost mid-request");
                    event.fail(503, "function_instance_lost");
                    return Err(ApiError::RetryLater {
                        code: "function_instance_lost",
                        message: "the function's instance was lost while it handled the \
                                  request; it runs elsewhere now: retry"
                            .into(),
                        retry_after_secs: 1,
                    });
                }
                warn!(endpoint = %target.endpoint, path, error = %e, "function unreachable");
                event.fail(502, "function_unreachable");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "function_unreachable",
                    "the function's container did not answer",
                ));
            }
        }
    };
    let mut event = event.expect("set on the first attempt");
    let (upstream, upstream_body) = upstream.into_parts();

    let mut response = Response::builder().status(upstream.status);
    if let Some(out) = response.headers_mut() {
        *out = end_to_end(&upstream.headers, origin);
        if let Some(length) = upstream.headers.get(header::CONTENT_LENGTH) {
            out.insert(header::CONTENT_LENGTH, length.clone());
        }
        out.insert(REQUEST_ID_HEADER, request_id_value);
        if let Some(event_id) = event.id() {
            out.insert(EVENT_ID_HEADER, uuid_header(event_id));
        }
    }
    event.answered(upstream.status.as_u16());
    // The event completes when the body has gone out (or the caller hung up).
    let body = Answer {
        body: upstream_body,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        event,
    };
    response
        .body(Body::new(body))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// A uuid as a header value, hyphenated, lower case.
fn uuid_header(id: Uuid) -> HeaderValue {
    let mut text = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .expect("a hyphenated uuid is a valid header value")
}

fn timed_out(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "function_timeout",
        format!(
            "the function did not answer within {:?}",
            state.config.invoke_timeout
        ),
    )
}

/// The function's answer on its way to the caller: counted into the invocation's event, and cut
/// off at the invocation's deadline (`SLIPWAY_INVOKE_TIMEOUT` covers the whole answer).
struct Answer {
    body: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    event: Event,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.event.sent(data.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.event.broke();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.event.broke();
                    return Poll::Ready(Some(Err(
                        "the function's answer outlasted the invocation timeout".into(),
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One invocation's event: PENDING when it is routed, SUCCESS or FAILURE when its answer has
/// been sent (on drop, so a caller that hangs up still completes it).
struct Event {
    recorder: std::sync::Arc<crate::events::EventRecorder>,
    row: Option<EventRow>,
    started: std::time::Instant,
}

impl Event {
    #[allow(clippy::too_many_arguments)]
    fn start(
        state: &AppState,
        caller: Caller,
        function_id: Uuid,
        target: &Target,
        request_id: Uuid,
        method: &http::Method,
        path: &str,
        request_bytes: usize,
    ) -> Self {
        let recorder = std::sync::Arc::clone(&state.events);
        let row = recorder.is_enabled().then(|| EventRow {
            // Time-ordered: each batch's keys land at the right edge of the primary key's index
            // instead of on random pages.
            id: Uuid::now_v7(),
            function_id,
            owner_id: caller.user_id,
            deployment_id: target.deployment_id,
            version: target.version,
            status: "PENDING",
            request_id,
            method: method_name(method),
            path: path.into(),
            status_code: None,
            failure_reason: None,
            request_bytes: request_bytes as i64,
            response_bytes: None,
            processing_time_ms: None,
            created_at: Utc::now(),
            completed_at: None,
        });
        if let Some(row) = &row {
            recorder.record(row.clone());
        }
        Self {
            recorder,
            row,
            started: std::time::Instant::now(),
        }
    }

    fn id(&self) -> Option<Uuid> {
        self.row.as_ref().map(|r| r.id)
    }

    fn answered(&mut self, status: u16) {
        if let Some(row) = &mut self.row {
            row.status_code = Some(i32::from(status));
            row.response_bytes = Some(0);
            if status >= 500 {
                row.failure_reason = Some(format!("the function answered {status}").into());
            }
        }
    }

    fn sent(&mut self, bytes: usize) {
        if let Some(row) = &mut self.row {
            *row.response_bytes.get_or_insert(0) += bytes as i64;
        }
    }

    fn broke(&mut self) {
        if let Some(row) = &mut self.row {
            row.failure_reason = Some(Cow::Borrowed("the function's answer broke off"));
        }
    }

    /// The proxy answered for the function (timeout, unreachable).
    fn fail(&mut self, status: u16, reason: &'static str) {
        if let Some(row) = &mut self.row {
            row.status_code = Some(i32::from(status));
            row.failure_reason = Some(Cow::Borrowed(reason));
        }
    }
}

/// The method as the event stores it: the standard ones without a copy.
fn method_name(method: &http::Method) -> Cow<'static, str> {
    Cow::Borrowed(match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => return Cow::Owned(method.as_str().to_owned()),
    })
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Some(mut row) = self.row.take() {
            row.status = if row.failure_reason.is_some() || row.status_code.is_none() {
                "FAILURE"
            } else {
                "SUCCESS"
            };
            row.processing_time_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
            row.completed_at = Some(Utc::now());
            self.recorder.record(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_host_is_its_id_under_the_invoke_domain() {
        let id = Uuid::new_v4();
        let domain = "fn.example.com";
        for host in [
            format!("{}.fn.example.com", id.simple()),
            format!("{id}.fn.example.com:8443"),
            format!("{}.FN.Example.com.", id.simple()),
        ] {
            assert_eq!(function_host(&host, domain), Some(Some(id)), "{host}");
        }
        assert_eq!(function_host("nope.fn.example.com", domain), Some(None));
        assert_eq!(
            function_host(&format!("a.{}.fn.example.com", id.simple()), domain),
            Some(None),
            "one label only"
        );
        for elsewhere in [
            "api.example.com",
            "fn.example.com",
            "example.com",
            "evilfn.example.com",
        ] {
            assert_eq!(function_host(elsewhere, domain), None, "{elsewhere}");
        }
    }

    #[test]
    fn an_invocations_future_stays_small() {
        fn future_size<A, B, C, F: Future>(_: impl Fn(A, B, C) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        // Allocated and moved on every call. A query's future, awaited unboxed anywhere on the
        // way (a cache miss, a lost instance), made it 19 KB.
        let size = future_size(invoke);
        assert!(size < 6 * 1024, "an invocation's future is {size} bytes");
    }

    #[test]
    fn invocations_are_told_from_api_requests_before_routing() {
        let id = Uuid::new_v4();
        let request = |method: http::Method, uri: &str, host: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap()
        };
        let domain = Some("fn.example.com");
        let invoke = format!("/api/v1/functions/invoke/{id}@live/a/b?q=1");
        for method in [http::Method::GET, http::Method::POST, http::Method::OPTIONS] {
            assert_eq!(
                invocation_origin(domain, &request(method, &invoke, "api.example.com")),
                Some(Invocation::SharedOrigin)
            );
        }
        // The API refuses these itself (405, 404), as it always has.
        assert_eq!(
            invocation_origin(domain, &request(http::Method::TRACE, &invoke, "api")),
            None
        );
        for api in [
            "/api/v1/functions/invoke/",
            "/api/v1/functions/invoke//x",
            "/api/v1/functions",
        ] {
            assert_eq!(
                invocation_origin(domain, &request(http::Method::GET, api, "api")),
                None,
                "{api}"
            );
        }
        // On a function's own host every path and method is the function's.
        let own = format!("{id}.fn.example.com");
        assert_eq!(
            invocation_origin(
                domain,
                &request(http::Method::TRACE, "/api/v1/functions", &own)
            ),
            Some(Invocation::OwnOrigin(id))
        );
        assert_eq!(
            invocation_origin(
                domain,
                &request(http::Method::GET, "/", "nope.fn.example.com")
            ),
            Some(Invocation::UnknownHost)
        );
        assert_eq!(
            invocation_origin(None, &request(http::Method::GET, "/", &own)),
            None,
            "no invoke domain, no own origins"
        );
    }

    #[test]
    fn a_qualifier_names_an_alias_or_a_version() {
        let id = Uuid::new_v4();
        let target = |segment: String| parse_target(&segment).map_err(|e| e.to_string());
        assert_eq!(target(id.to_string()), Ok((id, None)));
        assert_eq!(
            target(format!("{id}@live")),
            Ok((id, Some(Qualifier::Alias("live".into()))))
        );
        assert_eq!(
            target(format!("{id}%40live")),
            Ok((id, Some(Qualifier::Alias("live".into()))))
        );
        assert_eq!(
            target(format!("{id}@12")),
            Ok((id, Some(Qualifier::Version(12))))
        );
        for refused in ["@0", "@99999999999", "@", "@Live", "@a@b", "@a%20b"] {
            assert!(target(format!("{id}{refused}")).is_err(), "{refused}");
        }
        assert!(target("not-an-id@live".into()).is_err());
    }

    #[test]
    fn cookies_cross_only_a_functions_own_origin() {
        let cookie = HeaderName::from_static("cookie");
        let set_cookie = HeaderName::from_static("set-cookie");
        assert!(!forwardable(&cookie, Origin::Shared));
        assert!(!forwardable(&set_cookie, Origin::Shared));
        assert!(forwardable(&cookie, Origin::Own));
        assert!(forwardable(&set_cookie, Origin::Own));
        let authorization = HeaderName::from_static("authorization");
        assert!(!forwardable(&authorization, Origin::Own));
    }
}
