//! Buffering a request body inside a middleware, within the route's body limit, so the body can
//! be hashed and then handed on to the handler unchanged.

use axum::{
    RequestExt,
    body::{Body, Bytes},
    extract::Request,
    http::request::Parts,
};
use http::StatusCode;
use http_body_util::LengthLimitError;

use crate::error::ApiError;

/// Says what passing a route's body limit means for that route. Without it a middleware that
/// buffers answers a generic `request_too_large`; the deploy route sets `archive_too_large`, the
/// answer its handler gives to an unbuffered upload, so signing does not change the contract.
#[derive(Debug, Clone)]
pub struct OversizedBody {
    pub code: &'static str,
    pub message: String,
}

/// Reads the whole body, honouring the route's `DefaultBodyLimit` (which must be layered outside
/// the calling middleware for the limit to be known here).
pub async fn buffer(request: Request) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = request.with_limited_body().into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(error) if passes_limit(&error) => {
            let (code, message) = match parts.extensions.get::<OversizedBody>() {
                Some(o) => (o.code, o.message.clone()),
                None => (
                    "request_too_large",
                    "the request body is larger than this route accepts".to_owned(),
                ),
            };
            Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message))
        }
        Err(error) => Err(ApiError::bad_request(
            "unreadable_body",
            format!("the request body could not be read: {error}"),
        )),
    }
}

/// The handler reads the same bytes the middleware hashed.
pub fn rebuild(parts: Parts, bytes: Bytes) -> Request {
    Request::from_parts(parts, Body::from(bytes))
}

fn passes_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}
