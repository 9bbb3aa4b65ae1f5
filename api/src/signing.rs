//! Signed requests. A function created with `skip_signing: false` (the default) takes mutating
//! requests only when they carry an HMAC-SHA256 signature, so a request altered or replayed on
//! the way (by a logging proxy, a CI log, a shell history) is refused; key management and the
//! operators' actions always need one.
//!
//! The protocol itself (the headers, the string to sign, the HMAC) is
//! [`slipway_shared::signing`], which the client shares without linking this crate; this module
//! is the API's side of it: which requests must be signed, the clock skew, nonces, and the key a
//! signature is checked against.
//!
//! The work is split so each use case decides for its own function: the middleware [`verify`]
//! checks any signature that is present and records it in the [`Caller`]; the use case, once it
//! has loaded the function, calls [`require_signature`] with the function's `skip_signing`.

use std::time::Duration;

use axum::{
    extract::{OriginalUri, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, Method, StatusCode};
use slipway_shared::{
    db,
    domain::SigningSecret,
    signing::{self as protocol, signature_matches, string_to_sign_v2, string_to_sign_with_digest},
};
use tracing::warn;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    body,
    error::ApiError,
};

pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static(protocol::TIMESTAMP_HEADER);
pub const NONCE_HEADER: HeaderName = HeaderName::from_static(protocol::NONCE_HEADER);
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static(protocol::SIGNATURE_HEADER);
pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static(protocol::KEY_ID_HEADER);

/// Proof that this request was signed with the API key it presented, at `signed_at`, with a
/// nonce not seen before for that key.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedSignature {
    pub api_key_id: Uuid,
    pub signed_at: DateTime<Utc>,
}

/// The check every use case that changes a function makes once it holds the function row:
/// unsigned requests pass only for functions created with `skip_signing: true`.
pub fn require_signature(
    signed: Option<&VerifiedSignature>,
    skip_signing: bool,
) -> Result<(), ApiError> {
    if skip_signing || signed.is_some() {
        return Ok(());
    }
    Err(rejection(
        "signature_required",
        "this function takes only signed requests: send X-Slipway-Timestamp, X-Slipway-Nonce and \
         X-Slipway-Signature (see the README, \"Signed requests\")",
    ))
}

/// The check of routes that always change something that matters beyond one function (keys,
/// the operators' actions): only signed requests pass, or the operators' console's own session.
pub fn require_signed(caller: &Caller) -> Result<(), ApiError> {
    if caller.signature().is_some() || caller.console_session {
        return Ok(());
    }
    Err(rejection(
        "signature_required",
        "this route takes only signed requests: send X-Slipway-Key-Id, X-Slipway-Timestamp, \
         X-Slipway-Nonce and X-Slipway-Signature (see the README, \"Signed requests\")",
    ))
}

fn rejection(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

fn malformed(message: impl Into<String>) -> ApiError {
    rejection("signature_malformed", message)
}

/// Which signature a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// Under the bearer key (deprecated).
    V1,
    /// Under the signing secret of the key `X-Slipway-Key-Id` names.
    V2 { key_id: Uuid },
}

/// The signature headers, parsed.
#[derive(Debug)]
struct Presented {
    scheme: Scheme,
    timestamp: String,
    signed_at: i64,
    nonce: String,
    signature: Vec<u8>,
}

/// `None` when none of the headers is there (an unsigned request); all three or an error
/// otherwise.
fn presented(headers: &HeaderMap) -> Result<Option<Presented>, ApiError> {
    let names = [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER];
    if names.iter().all(|name| !headers.contains_key(name)) {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(3);
    for name in &names {
        let mut all = headers.get_all(name).iter();
        let (Some(value), None) = (all.next(), all.next()) else {
            return Err(malformed(format!(
                "a signed request carries X-Slipway-Timestamp, X-Slipway-Nonce and \
                 X-Slipway-Signature exactly once each; {name} is missing or repeated"
            )));
        };
        let value = value
            .to_str()
            .map_err(|_| malformed(format!("{name} must be ASCII")))?;
        values.push(value.to_owned());
    }
    let [timestamp, nonce, signature]: [String; 3] =
        values.try_into().expect("one value per header name");

    let signed_at = Some(&timestamp)
        .filter(|t| (1..=12).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| malformed("X-Slipway-Timestamp must be unix seconds (digits only)"))?;
    let nonce_ok = (16..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !nonce_ok {
        return Err(malformed(
            "X-Slipway-Nonce must be 16 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    let (version, hex_digits) = signature
        .split_once('=')
        .filter(|(_, hex)| hex.len() == 64)
        .ok_or_else(|| {
            malformed(
                "X-Slipway-Signature must be 'v2=' (or 'v1=') and 64 hex digits of HMAC-SHA256",
            )
        })?;
    let signature = hex::decode(hex_digits)
        .map_err(|_| malformed("X-Slipway-Signature must be 64 hex digits after the '='"))?;
    let key_id = match headers.get(KEY_ID_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|raw| Uuid::try_parse(raw).ok())
                .ok_or_else(|| malformed("X-Slipway-Key-Id must be the key's id (a UUID)"))?,
        ),
    };
    let scheme = match (version, key_id) {
        ("v2", Some(key_id)) => Scheme::V2 { key_id },
        ("v2", None) => {
            return Err(malformed(
                "a v2 signature names its key: send X-Slipway-Key-Id with the key's id",
            ));
        }
        ("v1", _) => Scheme::V1,
        _ => {
            return Err(malformed(
                "X-Slipway-Signature must be 'v2=' (or the deprecated 'v1=') and 64 hex digits",
            ));
        }
    };
    Ok(Some(Presented {
        scheme,
        timestamp,
        signed_at,
        nonce,
        signature,
    }))
}

fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Middleware for mutating routes: verifies a signature when the request carries one, and lets
/// unsigned requests through untouched (the use case decides whether it needed one). It must sit
/// inside the route's `DefaultBodyLimit`, since it buffers the body to hash it (unless [`body::spool`]
/// already has).
pub async fn verify(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match verified(&state, request).await {
        Ok((request, scheme)) => {
            let mut response = next.run(request).await;
            if scheme == Some(Scheme::V1) {
                // RFC 9745: the v1 scheme will go; the README says how to rotate.
                response
                    .headers_mut()
                    .insert("deprecation", http::HeaderValue::from_static("true"));
            }
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Signing secrets are sealed with `SLIPWAY_SECRETS_KEY`: without it they can be neither made
/// nor checked.
pub(crate) fn secrets_key_missing() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "secrets_key_missing",
        "this Slipway has no SLIPWAY_SECRETS_KEY, which seals keys' signing secrets",
    )
}

/// The caller a signed request speaks for, and the secret its signature must be made with.
async fn signer(
    state: &AppState,
    headers: &HeaderMap,
    scheme: Scheme,
) -> Result<(Caller, String), ApiError> {
    let bearer = match headers.get(http::header::AUTHORIZATION) {
        None => None,
        Some(_) => Some(auth::bearer_key(headers)?),
    };
    // An unknown key is a plain 401 whatever the signature says.
    let owner = match (bearer, scheme) {
        (Some(key), _) => auth::key_owner(state, key).await?,
        (None, Scheme::V2 { key_id }) => {
            let mut conn = state.pool.acquire().await?;
            db::users::live_key(&mut conn, key_id)
                .await?
                .ok_or_else(|| auth::unauthorized("unknown or revoked API key"))?
        }
        (None, Scheme::V1) => {
            return Err(auth::unauthorized(
                "a v1 signature is checked against Authorization: Bearer <api key>, which is missing",
            ));
        }
    };
    let secret = match (scheme, owner.signing_secret.as_deref()) {
        (Scheme::V2 { key_id }, Some(sealed)) if key_id == owner.key_id => {
            let secrets_key = state
                .config
                .secrets_key
                .as_ref()
                .ok_or_else(secrets_key_missing)?;
            SigningSecret::open(sealed, secrets_key, &owner.prefix).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "the signing secret of key {} does not open: {e}",
                    owner.key_id
                ))
            })?
        }
        (Scheme::V2 { .. }, Some(_)) => {
            return Err(rejection(
                "signature_invalid",
                "X-Slipway-Key-Id names another key than the one in Authorization",
            ));
        }
        (Scheme::V2 { .. }, None) => {
            return Err(rejection(
                "signature_invalid",
                "this key has no signing secret (it was made before them): sign with v1 until \
                 you rotate it",
            ));
        }
        (Scheme::V1, Some(_)) => {
            return Err(rejection(
                "signature_scheme_retired",
                "this key has a signing secret: sign with it (v2); v1 signatures, made with the \
                 key itself, are refused for it",
            ));
        }
        (Scheme::V1, None) => bearer
            .expect("v1 was checked to carry a bearer key")
            .to_owned(),
    };
    Ok((auth::Caller::from(owner), secret))
}

async fn verified(
    state: &AppState,
    request: Request,
) -> Result<(Request, Option<Scheme>), ApiError> {
    if !is_mutating(request.method()) {
        return Ok((request, None));
    }
    let Some(presented) = presented(request.headers())? else {
        return Ok((request, None));
    };
    let (mut caller, secret) = signer(state, request.headers(), presented.scheme).await?;

    let now = Utc::now();
    let skew = state.config.signature_max_skew;
    let signed_at = DateTime::from_timestamp(presented.signed_at, 0)
        .ok_or_else(|| malformed("X-Slipway-Timestamp is out of range"))?;
    // Compared at full precision, the same way the nonce clean-up below cuts: a nonce is
    // deleted only once its timestamp alone would refuse the replay.
    if (now - signed_at).abs().to_std().unwrap_or(Duration::MAX) > skew {
        return Err(rejection(
            "signature_expired",
            format!(
                "X-Slipway-Timestamp {} is more than {}s away from the server's clock ({})",
                presented.timestamp,
                skew.as_secs(),
                now.timestamp()
            ),
        ));
    }

    let (mut request, digests) = body::digests(request).await?;
    let path_and_query = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(request.uri(), |original| &original.0)
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let string_to_sign = string_to_sign_with_digest(
        request.method().as_str(),
        path_and_query,
        &presented.timestamp,
        &presented.nonce,
        &digests.sha256,
    );
    let signed = match presented.scheme {
        Scheme::V1 => string_to_sign,
        Scheme::V2 { key_id } => string_to_sign_v2(key_id, &string_to_sign),
    };
    if !signature_matches(&secret, &signed, &presented.signature) {
        return Err(rejection(
            "signature_invalid",
            "X-Slipway-Signature does not match this request signed with this key's secret",
        ));
    }

    let mut conn = state.pool.acquire().await?;
    if !db::nonces::record(&mut conn, caller.key_id, &presented.nonce, signed_at).await? {
        return Err(rejection(
            "signature_replayed",
            "this X-Slipway-Nonce was already used with this API key; sign each request anew",
        ));
    }
    // Housekeeping on the way: a failure here costs only table size, not this request.
    if let Err(error) = db::nonces::forget_signed_before(&mut conn, now - skew).await {
        warn!(%error, "could not delete expired request nonces");
    }

    let verified = VerifiedSignature {
        api_key_id: caller.key_id,
        signed_at,
    };
    caller.signature = Some(verified);
    request.extensions_mut().insert(caller);
    // Also on its own, for code that wants `Option<Extension<VerifiedSignature>>`.
    request.extensions_mut().insert(verified);
    Ok((request, Some(presented.scheme)))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const NONCE: &str = "nonce_0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn headers_are_all_or_nothing_and_strictly_shaped() {
        const T: &str = "x-slipway-timestamp";
        const N: &str = "x-slipway-nonce";
        const S: &str = "x-slipway-signature";
        let sig = format!("v1={}", "ab".repeat(32));
        assert!(presented(&HeaderMap::new()).unwrap().is_none());
        let ok = presented(&headers(&[(T, "1763900000"), (N, NONCE), (S, &sig)]))
            .unwrap()
            .unwrap();
        assert_eq!((ok.signed_at, ok.nonce.as_str()), (1_763_900_000, NONCE));
        assert_eq!(ok.signature, vec![0xab; 32]);
        let upper = format!("v1={}", "AB".repeat(32));
        assert!(
            presented(&headers(&[(T, "1763900000"), (N, NONCE), (S, &upper)])).is_ok(),
            "hex digits in either case"
        );

        let long_nonce = "n".repeat(129);
        let with = |name: &'static str, value: &str| {
            let mut map = headers(&[(T, "1763900000"), (N, NONCE), (S, &sig)]);
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
            map
        };
        let mut repeated = with(N, NONCE);
        repeated.append(N, HeaderValue::from_static("another_nonce_0123456"));
        let cases = [
            ("timestamp only", headers(&[(T, "1763900000")])),
            ("no signature", headers(&[(T, "1763900000"), (N, NONCE)])),
            ("repeated nonce", repeated),
            ("signed timestamp", with(T, "-5")),
            ("fractional timestamp", with(T, "1763900000.5")),
            ("huge timestamp", with(T, "9999999999999")),
            ("short nonce", with(N, "abc")),
            ("nonce with a dot", with(N, "nonce.0123456789abcdef")),
            ("long nonce", with(N, &long_nonce)),
            ("no version", with(S, &sig[3..])),
            ("other version", with(S, &sig.replace("v1=", "v2="))),
            ("short signature", with(S, &sig[..60])),
            ("not hex", with(S, &sig.replace('a', "g"))),
        ];
        for (case, map) in cases {
            let error = presented(&map).expect_err(case);
            assert!(
                matches!(
                    error,
                    ApiError::Client {
                        code: "signature_malformed",
                        ..
                    }
                ),
                "{case}: {error:?}"
            );
        }
    }

    #[test]
    fn only_functions_that_skip_signing_take_unsigned_requests() {
        let signed = VerifiedSignature {
            api_key_id: Uuid::nil(),
            signed_at: Utc::now(),
        };
        assert!(require_signature(Some(&signed), false).is_ok());
        assert!(require_signature(Some(&signed), true).is_ok());
        assert!(require_signature(None, true).is_ok());
        let error = require_signature(None, false).unwrap_err();
        assert!(matches!(
            error,
            ApiError::Client {
                status: StatusCode::UNAUTHORIZED,
                code: "signature_required",
                ..
            }
        ));
    }
}
