//! The operators' console at `/ops/`: server-rendered pages over the same use cases as the
//! operators' API (`routes::ops`, `routes::schedules`), so the console shows exactly what the API
//! answers and acts through the same checks. Nothing is readable without signing in with an
//! operator key; the session is a random token in an `HttpOnly`, `SameSite=Strict` cookie scoped
//! to `/ops`, and only its hash is stored (`console_sessions`). Actions are form POSTs, refused
//! when the browser says they come from another site. Pages refresh themselves every few
//! seconds; every byte is served from here (no CDN, no script).

mod pages;

use axum::{
    Form, Router,
    extract::{FromRequestParts, State},
    http::{HeaderMap, StatusCode, Uri, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::Utc;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use slipway_shared::db;

use crate::{AppState, auth::Caller, error::ApiError};

const COOKIE: &str = "slipway_ops";
/// A working day; signing in again is one paste.
const SESSION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(8);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops", get(|| async { Redirect::permanent("/ops/") }))
        .route("/ops/", get(pages::queues))
        .route("/ops/sign-in", get(sign_in_form).post(sign_in))
        .route("/ops/sign-out", post(sign_out))
        .route("/ops/jobs", get(pages::jobs))
        .route("/ops/jobs/retry", post(pages::retry_matching))
        .route("/ops/jobs/cancel", post(pages::cancel_matching))
        .route("/ops/jobs/{id}", get(pages::job))
        .route("/ops/jobs/{id}/retry", post(pages::retry))
        .route("/ops/jobs/{id}/cancel", post(pages::cancel))
        .route("/ops/queues/{name}/pause", post(pages::pause))
        .route("/ops/queues/{name}/resume", post(pages::resume))
        .route("/ops/deployments", get(pages::deployments))
        .route("/ops/functions", get(pages::functions))
        .route("/ops/schedules", get(pages::schedules))
}

/// A signed-in operator, as the use cases see one. Without a live session a page redirects to
/// the sign-in form; a POST from another site is refused before the session is even looked at.
pub struct Operator(pub Caller);

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if parts.method == http::Method::POST && cross_site(&parts.headers) {
            return Err(pages::error_page(
                StatusCode::FORBIDDEN,
                "cross_site",
                "this form was posted from another site",
            ));
        }
        let Some(token) = session_token(&parts.headers) else {
            return Err(Redirect::to("/ops/sign-in").into_response());
        };
        let owner = async {
            let mut conn = state.pool.acquire().await?;
            Ok::<_, ApiError>(db::console::session_owner(&mut conn, &hash(&token)).await?)
        }
        .await
        .map_err(pages::api_error_page)?;
        match owner {
            Some(owner) => Ok(Self(Caller {
                console_session: true,
                ..Caller::from(owner)
            })),
            None => Err(Redirect::to("/ops/sign-in").into_response()),
        }
    }
}

/// Browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`); a form posted by another
/// site must not act with this console's session, even where `SameSite` is not honoured.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        host,
    ) {
        (Some(origin), Some(host)) => {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !authority.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|token| token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `Secure` when the browser reached us over TLS (directly or, behind the load balancer, as
/// `X-Forwarded-Proto` says); plain HTTP on the dev stack would never send it back otherwise.
fn cookie(value: &str, max_age: i64, headers: &HeaderMap, uri: &Uri) -> String {
    let tls = uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!(
        "{COOKIE}={value}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if tls { "; Secure" } else { "" }
    )
}

async fn sign_in_form() -> Html<String> {
    pages::sign_in_page(None)
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "cross_site",
            "this form was posted from another site",
        );
    }
    let refused = |message: &str| {
        (StatusCode::UNAUTHORIZED, pages::sign_in_page(Some(message))).into_response()
    };
    let Ok(Form(form)) = form else {
        return refused("paste an operator key");
    };
    let owner = match crate::auth::key_owner(&state, form.key.trim()).await {
        Ok(owner) => owner,
        // The same words for an unknown key and a tenant's key: nothing learned by guessing.
        Err(ApiError::Client { .. }) => return refused("that is not a live operator key"),
        Err(error) => return pages::api_error_page(error),
    };
    if !owner.operator {
        return refused("that is not a live operator key");
    }
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    let token = hex::encode(token);
    let opened = async {
        let mut conn = state.pool.acquire().await?;
        db::console::open_session(
            &mut conn,
            &hash(&token),
            owner.key_id,
            Utc::now() + SESSION_LIFETIME,
        )
        .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(error) = opened {
        return pages::api_error_page(error);
    }
    (
        [(
            header::SET_COOKIE,
            cookie(&token, SESSION_LIFETIME.num_seconds(), &headers, &uri),
        )],
        Redirect::to("/ops/"),
    )
        .into_response()
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if cross_site(&headers) {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "cross_site",
            "this form was posted from another site",
        );
    }
    if let Some(token) = session_token(&headers)
        && let Ok(mut conn) = state.pool.acquire().await
    {
        db::console::close_session(&mut conn, &hash(&token))
            .await
            .ok();
    }
    (
        [(header::SET_COOKIE, cookie("", 0, &headers, &uri))],
        Redirect::to("/ops/sign-in"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn posts_from_another_site_are_told_apart() {
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!cross_site(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(cross_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "slipway.example")
        ])));
        // A client that says nothing (curl) is no browser carrying a cookie across sites.
        assert!(!cross_site(&headers(&[("host", "slipway.example")])));
    }

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let token = "ab".repeat(32);
        let cookie = format!("other=1; {COOKIE}={token}");
        assert_eq!(
            session_token(&headers(&[("cookie", &cookie)])),
            Some(token.clone())
        );
        assert_eq!(
            session_token(&headers(&[("cookie", "slipway_ops=short")])),
            None
        );
    }
}
