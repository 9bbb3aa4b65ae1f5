//! One error type for every handler. 4xx answers carry a stable snake_case `code` and a message
//! written for the caller; 5xx answers say nothing internal and hand the error to the logging
//! middleware through the response's extensions.

use std::sync::Arc;

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Path, Query, Request, rejection::JsonRejection},
    http::StatusCode,
    http::request::Parts,
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 503 with `Retry-After`: the function is on its way (waking) and worth asking again.
    #[error("{message}")]
    RetryLater {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// 429 with `Retry-After`: the caller is past one of its limits for now.
    #[error("{message}")]
    Throttled {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn function_not_found() -> Self {
        Self::not_found("function_not_found", "no such function")
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Whether the error is Postgres being unreachable or going away (`db::unavailable`).
fn database_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(slipway_shared::db::unavailable_in)
}

/// `{"error": {"code", "message"}}`: what every answer that is not a success carries.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorEnvelope)]
pub struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Stable and snake_case, for programs: `function_not_found`, `invalid_json`, …
    #[schema(example = "function_not_found")]
    code: &'a str,
    /// For people; may change.
    #[schema(example = "no such function")]
    message: &'a str,
}

/// The internal error behind a 500, for the logging middleware.
#[derive(Clone)]
pub struct InternalErrorReport(pub Arc<anyhow::Error>);

/// The envelope with `Retry-After`: the caller may ask again after that many seconds.
fn retry_after(status: StatusCode, code: &str, message: &str, seconds: u64) -> Response {
    let mut response = error_response(status, code, message);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, seconds.into());
    response
}

pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorEnvelope {
            error: ErrorBody { code, message },
        }),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Client {
                status,
                code,
                message,
            } => error_response(status, code, &message),
            Self::Throttled {
                code,
                message,
                retry_after_secs,
            } => retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                code,
                &message,
                retry_after_secs,
            ),
            Self::RetryLater {
                code,
                message,
                retry_after_secs,
            } => retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                &message,
                retry_after_secs,
            ),
            Self::Internal(error) if database_unavailable(&error) => {
                // Postgres restarting or unreachable: nothing was done, and asking again soon
                // is the right move; the pool reconnects by itself.
                let mut response = retry_after(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; try again shortly",
                    2,
                );
                response
                    .extensions_mut()
                    .insert(InternalErrorReport(Arc::new(error)));
                response
            }
            Self::Internal(error) => {
                let mut response = error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; it has been logged",
                );
                response
                    .extensions_mut()
                    .insert(InternalErrorReport(Arc::new(error)));
                response
            }
        }
    }
}

/// `axum::Json` whose rejections use the error envelope.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                match rejection {
                    JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                    JsonRejection::JsonSyntaxError(_) => "invalid_json",
                    JsonRejection::JsonDataError(_) => "invalid_body",
                    _ => "invalid_body",
                },
                rejection.body_text(),
            )),
        }
    }
}

/// `axum::extract::Path` whose rejections (a parameter that is not UTF-8 once decoded) use the
/// error envelope.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "invalid_path",
                rejection.body_text(),
            )),
        }
    }
}

/// `axum::extract::Query` whose rejections (a malformed or repeated parameter) use the error
/// envelope.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: anyhow::Error) -> (StatusCode, bool) {
        let response = ApiError::Internal(error).into_response();
        (
            response.status(),
            response.headers().contains_key(http::header::RETRY_AFTER),
        )
    }

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_and_other_faults_a_500() {
        for unavailable in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            let error = anyhow::Error::new(unavailable).context("loading the function");
            assert_eq!(status(error), (StatusCode::SERVICE_UNAVAILABLE, true));
        }
        assert_eq!(
            status(anyhow::Error::new(sqlx::Error::RowNotFound)),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
        assert_eq!(
            status(anyhow::anyhow!("a bug")),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
    }
}
