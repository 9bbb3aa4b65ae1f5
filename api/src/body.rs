//! Request bodies that a middleware must see whole before the handler runs: the signature covers
//! the body's SHA-256 and the idempotency fingerprint a boundary-free hash of it. Both digests are
//! computed once per request, in one pass, and kept in the request's extensions.
//!
//! Small bodies are buffered. The deploy route spools its upload to an unlinked temporary file
//! instead ([`spool`]), so the API's memory stays flat however many archives arrive at once; the
//! handler then reads the same bytes back from disk.

use std::io::{Seek as _, Write as _};

use axum::{
    RequestExt,
    body::{Body, Bytes},
    extract::Request,
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use http::{StatusCode, header::CONTENT_TYPE};
use http_body_util::LengthLimitError;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// Says what passing a route's body limit means for that route. Without it a middleware that
/// buffers answers a generic `request_too_large`; the deploy route sets `archive_too_large`, the
/// answer its handler gives to an unbuffered upload, so signing does not change the contract.
#[derive(Debug, Clone)]
pub struct OversizedBody {
    pub code: &'static str,
    pub message: String,
}

/// The digests of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigests {
    /// What a signature covers.
    pub sha256: [u8; 32],
    /// SHA-256 with every multipart boundary replaced by a fixed one: every client picks a fresh
    /// random boundary per attempt (RFC 2046 forbids the boundary inside the parts, so nothing
    /// else moves), and a retried upload must still be "the same request".
    pub boundary_free: [u8; 32],
}

/// Both digests in one pass over a body that arrives in chunks.
struct Digester {
    plain: Sha256,
    boundary_free: Sha256,
    /// `--boundary` of a multipart body.
    delimiter: Option<Vec<u8>>,
    /// The tail that may be the start of a delimiter split across chunks.
    carry: Vec<u8>,
}

const FIXED_DELIMITER: &[u8] = b"--slipway-boundary";

impl Digester {
    fn new(content_type: Option<&str>) -> Self {
        Self {
            plain: Sha256::new(),
            boundary_free: Sha256::new(),
            delimiter: content_type
                .and_then(multipart_boundary)
                .map(|boundary| format!("--{boundary}").into_bytes()),
            carry: Vec::new(),
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.plain.update(chunk);
        let Some(delimiter) = &self.delimiter else {
            self.boundary_free.update(chunk);
            return;
        };
        self.carry.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(at) = find(&self.carry[start..], delimiter) {
            self.boundary_free.update(&self.carry[start..start + at]);
            self.boundary_free.update(FIXED_DELIMITER);
            start += at + delimiter.len();
        }
        // Anything before the last `len - 1` bytes cannot begin a delimiter still to complete.
        let keep = (self.carry.len() - start).min(delimiter.len() - 1);
        let settled = self.carry.len() - keep;
        self.boundary_free.update(&self.carry[start..settled]);
        self.carry.drain(..settled);
    }

    fn finish(mut self) -> BodyDigests {
        self.boundary_free.update(&self.carry);
        BodyDigests {
            sha256: self.plain.finalize().into(),
            boundary_free: self.boundary_free.finalize().into(),
        }
    }
}

fn content_type(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn multipart_boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
    {
        return None;
    }
    params.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(offset) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The request's body digests, computed by an earlier layer ([`spool`], or another middleware's
/// call to this) or else by buffering the body within the route's `DefaultBodyLimit` (which must
/// be layered outside the calling middleware for the limit to be known here). The request comes
/// back with its body intact for the handler.
pub async fn digests(request: Request) -> Result<(Request, BodyDigests), ApiError> {
    if let Some(digests) = request.extensions().get::<BodyDigests>().copied() {
        return Ok((request, digests));
    }
    let (mut parts, body) = request.with_limited_body().into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => return Err(unreadable(&parts, &error)),
    };
    let mut digester = Digester::new(content_type(&parts));
    digester.update(&bytes);
    let digests = digester.finish();
    parts.extensions.insert(digests);
    Ok((Request::from_parts(parts, Body::from(bytes)), digests))
}

/// Bodies up to this size stay in memory: a few concurrent uploads of this size per key are
/// nothing, and most deploys of a function's source are smaller.
const IN_MEMORY_BODY: usize = 1024 * 1024;

/// Middleware for the upload route, outside signing and idempotency: hashes the body as it
/// arrives, within the route's `DefaultBodyLimit`, and hands the handler a body it can read once
/// more. A body past `IN_MEMORY_BODY` goes to an unlinked temporary file (gone with the process,
/// however it ends) and is read back from it, so a large upload never sits in memory.
pub async fn spool(request: Request, next: Next) -> Response {
    match spooled(request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn spooled(request: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = request.with_limited_body().into_parts();
    let mut digester = Digester::new(content_type(&parts));
    let mut chunks = body.into_data_stream();
    let mut head = Vec::new();
    let mut file = None;
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| unreadable(&parts, &error))?;
        digester.update(&chunk);
        if file.is_none() && head.len() + chunk.len() <= IN_MEMORY_BODY {
            head.extend_from_slice(&chunk);
            continue;
        }
        let pending = std::mem::take(&mut head);
        written += (pending.len() + chunk.len()) as u64;
        let spool = match file.take() {
            Some(spool) => spool,
            None => blocking(tempfile::tempfile).await?,
        };
        file = Some(
            blocking(move || {
                let mut spool = spool;
                spool.write_all(&pending)?;
                spool.write_all(&chunk)?;
                Ok(spool)
            })
            .await?,
        );
    }
    parts.extensions.insert(digester.finish());
    let body = match file {
        None => Body::from(head),
        Some(spool) => {
            let spool = blocking(move || {
                let mut spool = spool;
                spool.rewind()?;
                Ok(spool)
            })
            .await?;
            read_back(spool, written)
        }
    };
    Ok(Request::from_parts(parts, body))
}

/// Runs blocking file I/O off the async executor.
async fn blocking<T: Send + 'static>(
    io: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(io)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(spool_failed)
}

/// The spooled body, streamed from its file. A file that ends before `length` bytes is an error
/// on our side: a short body must never reach the handler as if the client had sent it.
fn read_back(spool: std::fs::File, length: u64) -> Body {
    let file = tokio::fs::File::from_std(spool);
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 64 << 10)
        .map(Some)
        .chain(futures::stream::once(async { None }));
    let checked = chunks.scan(0u64, move |read, item| {
        let next = match item {
            Some(Ok(chunk)) => {
                *read += chunk.len() as u64;
                Some(Ok(chunk))
            }
            Some(Err(error)) => Some(Err(error)),
            None if *read == length => None,
            None => Some(Err(std::io::Error::other(format!(
                "the spooled upload read back {read} of its {length} bytes"
            )))),
        };
        std::future::ready(next)
    });
    Body::from_stream(checked)
}

fn spool_failed(error: std::io::Error) -> ApiError {
    ApiError::Internal(anyhow::Error::new(error).context("spooling an upload to disk"))
}

/// A body that passed the route's limit, or that the client stopped sending.
fn unreadable(parts: &Parts, error: &axum::Error) -> ApiError {
    if passes_limit(error) {
        let (code, message) = match parts.extensions.get::<OversizedBody>() {
            Some(o) => (o.code, o.message.clone()),
            None => (
                "request_too_large",
                "the request body is larger than this route accepts".to_owned(),
            ),
        };
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message);
    }
    ApiError::bad_request(
        "unreadable_body",
        format!("the request body could not be read: {error}"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str, archive: &str) -> Vec<u8> {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"function_id\"\r\n\r\nabc\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"archive\"\r\n\r\n{archive}\r\n\
             --{boundary}--\r\n"
        )
        .into_bytes()
    }

    fn digests_in_chunks(content_type: Option<&str>, body: &[u8], chunk: usize) -> BodyDigests {
        let mut digester = Digester::new(content_type);
        for piece in body.chunks(chunk) {
            digester.update(piece);
        }
        digester.finish()
    }

    fn ct(boundary: &str) -> String {
        format!("multipart/form-data; boundary={boundary}")
    }

    #[test]
    fn multipart_bodies_compare_by_content_not_by_boundary() {
        let a = form("XyZ123", "tarball");
        let b = form("------------------------d74496d66958873e", "tarball");
        let c = form("XyZ123", "tarbalL");
        let hash_a = digests_in_chunks(Some(&ct("XyZ123")), &a, a.len()).boundary_free;
        let quoted = ct("\"------------------------d74496d66958873e\"");
        assert_eq!(
            hash_a,
            digests_in_chunks(Some(&quoted), &b, b.len()).boundary_free
        );
        assert_ne!(
            hash_a,
            digests_in_chunks(Some(&ct("XyZ123")), &c, c.len()).boundary_free
        );
        // Other bodies are hashed as they are.
        let json = digests_in_chunks(Some("application/json"), &a, a.len());
        assert_ne!(hash_a, json.boundary_free);
        assert_eq!(json.boundary_free, json.sha256);
        assert_eq!(
            digests_in_chunks(None, b"{}", 2).sha256,
            <[u8; 32]>::from(Sha256::digest(b"{}"))
        );
    }

    #[test]
    fn boundaries_are_read_from_multipart_content_types_only() {
        assert_eq!(
            multipart_boundary("multipart/form-data; charset=utf-8; Boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(multipart_boundary("Multipart/Mixed;boundary=x"), Some("x"));
        assert_eq!(multipart_boundary("application/json; boundary=x"), None);
        assert_eq!(multipart_boundary("multipart/form-data"), None);
        assert_eq!(multipart_boundary("multipart/form-data; boundary="), None);
    }

    /// A delimiter split across chunks, at every possible cut, hashes as if read whole.
    #[test]
    fn chunking_never_changes_a_digest() {
        let body = form("boundary-with-some-length", &"x-".repeat(300));
        let content_type = ct("boundary-with-some-length");
        let whole = digests_in_chunks(Some(&content_type), &body, body.len());
        assert_eq!(whole.sha256, <[u8; 32]>::from(Sha256::digest(&body)));
        for chunk in 1..40 {
            assert_eq!(
                digests_in_chunks(Some(&content_type), &body, chunk),
                whole,
                "chunks of {chunk} bytes"
            );
        }
    }

    /// A body in chunks, as hyper hands it over.
    fn request_in_chunks(body: Vec<u8>, chunk: usize) -> Request {
        let pieces: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        Request::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Body::from_stream(futures::stream::iter(pieces)))
            .unwrap()
    }

    #[tokio::test]
    async fn a_spooled_body_reads_back_whole_in_memory_or_from_its_file() {
        // Within axum's default body limit (2 MiB), which applies without a route's own.
        for size in [
            0,
            10,
            IN_MEMORY_BODY,
            IN_MEMORY_BODY + 1,
            IN_MEMORY_BODY * 3 / 2 + 777,
        ] {
            let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let request = spooled(request_in_chunks(body.clone(), 64 * 1024 + 3))
                .await
                .unwrap();
            let digests = *request.extensions().get::<BodyDigests>().unwrap();
            assert_eq!(digests.sha256, <[u8; 32]>::from(Sha256::digest(&body)));
            let read = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(read.len(), body.len(), "{size} bytes");
            assert!(read[..] == body[..], "{size} bytes");
        }
    }

    #[tokio::test]
    async fn a_spool_file_that_reads_back_short_is_an_error_not_a_short_body() {
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(b"only part").unwrap();
        spool.rewind().unwrap();
        let read = axum::body::to_bytes(read_back(spool, 100), usize::MAX).await;
        assert!(read.is_err());
    }
}
