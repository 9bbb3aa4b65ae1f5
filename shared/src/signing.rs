//! The request-signing protocol, shared by the API that checks signatures and the client that
//! makes them; pure (HMAC-SHA256 over strings), so the client need not link the server to sign.
//!
//! ```text
//! X-Slipway-Key-Id:    <the key's id>                       (v2)
//! X-Slipway-Timestamp: <unix seconds>
//! X-Slipway-Nonce:     <16-128 of A-Z a-z 0-9 _ ->, never reused with the same key
//! X-Slipway-Signature: v2=<hex HMAC-SHA256(signing secret, KEY_ID "\n" string to sign)>
//!                      v1=<hex HMAC-SHA256(api key, string to sign)>   (deprecated)
//!
//! string to sign = METHOD "\n" PATH_AND_QUERY "\n" TIMESTAMP "\n" NONCE "\n" hex(SHA-256(body))
//! ```
//!
//! `METHOD` as sent (upper case), `PATH_AND_QUERY` exactly as in the request line (no decoding or
//! reordering), `TIMESTAMP` and `NONCE` exactly as in their headers, the body hash in lower-case
//! hex (`e3b0c442…` for an empty body), no trailing newline.
//!
//! v2 signs with the key's signing secret, which is shown once when the key is made and never
//! travels: a v2 request needs no `Authorization` at all (the key id names the key), so a request
//! captured whole, headers included, holds nothing that signs another. v1 signed with the bearer
//! key itself, which every request carries; it is accepted only for keys made before signing
//! secrets existed, answered with `Deprecation: true`, until their owners rotate them.
//!
//! The API's side (which headers a request must carry, the clock skew, nonces, who may skip
//! signing) is `slipway_api::signing`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

// Lower case, as HTTP/2 sends them and `http::HeaderName::from_static` requires.
pub const TIMESTAMP_HEADER: &str = "x-slipway-timestamp";
pub const NONCE_HEADER: &str = "x-slipway-nonce";
pub const SIGNATURE_HEADER: &str = "x-slipway-signature";
pub const KEY_ID_HEADER: &str = "x-slipway-key-id";

/// The string the HMAC covers.
pub fn string_to_sign(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_sha256 = Sha256::digest(body).into();
    string_to_sign_with_digest(method, path_and_query, timestamp, nonce, &body_sha256)
}

/// [`string_to_sign`] of a body known by its SHA-256 (a spooled upload).
pub fn string_to_sign_with_digest(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> String {
    let body_hash = hex::encode(body_sha256);
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}")
}

/// What v2 signs: the key id, then the string to sign, so a signature names its key.
pub fn string_to_sign_v2(key_id: Uuid, string_to_sign: &str) -> String {
    format!("{key_id}\n{string_to_sign}")
}

/// `v1=<hex>`, the value of `X-Slipway-Signature` for `string_to_sign` under `api_key`.
pub fn signature_header(api_key: &str, string_to_sign: &str) -> String {
    format!(
        "v1={}",
        hex::encode(mac(api_key, string_to_sign).finalize().into_bytes())
    )
}

/// `v2=<hex>`: `string_to_sign_v2` under the key's signing secret.
pub fn signature_header_v2(signing_secret: &str, string_to_sign_v2: &str) -> String {
    format!(
        "v2={}",
        hex::encode(
            mac(signing_secret, string_to_sign_v2)
                .finalize()
                .into_bytes()
        )
    )
}

fn mac(api_key: &str, string_to_sign: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// Whether `presented` (the signature's bytes, hex-decoded, without `v1=`/`v2=`) is the HMAC of
/// `string_to_sign` under `key`. Constant-time: the comparison must not tell an attacker how many
/// leading bytes were right.
pub fn signature_matches(key: &str, string_to_sign: &str, presented: &[u8]) -> bool {
    mac(key, string_to_sign).verify_slice(presented).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_abcdefgh_0123456789abcdefghijklmnopqrstuv";
    const PATH: &str = "/api/functions/0b7f4c9e-2f3a-4a51-9d0e-5c1f7a3e8b21/rollback?dry=1";
    const NONCE: &str = "nonce_0123456789abcdef";

    #[test]
    fn the_string_to_sign_is_five_lines_without_a_trailing_newline() {
        assert_eq!(
            string_to_sign("POST", PATH, "1763900000", NONCE, br#"{"version":1}"#),
            format!(
                "POST\n{PATH}\n1763900000\n{NONCE}\n\
                 2430f1a2ad2982d0067885488a4c89e21ad1d7c83b115ba8f1b20acc88dfaea8"
            )
        );
        assert!(
            string_to_sign("DELETE", "/x", "1", NONCE, b"")
                .ends_with("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    /// Computed with `openssl dgst -sha256 -hmac "$key"` over the same bytes, as the README does.
    #[test]
    fn signatures_match_openssl() {
        let s = string_to_sign("POST", PATH, "1763900000", NONCE, br#"{"version":1}"#);
        assert_eq!(
            signature_header(KEY, &s),
            "v1=9c9dd8cd13fd268f0c8c8dc5d1ec6557a9235aa188ac991789e591112c2fee02"
        );
    }

    #[test]
    fn any_change_to_the_request_or_the_key_breaks_the_signature() {
        let sign = |m: &str, p: &str, t: &str, n: &str, b: &[u8]| string_to_sign(m, p, t, n, b);
        let original = sign("POST", PATH, "1763900000", NONCE, b"{}");
        let good = hex::decode(&signature_header(KEY, &original)[3..]).unwrap();
        assert!(signature_matches(KEY, &original, &good));
        for (case, changed) in [
            ("method", sign("PUT", PATH, "1763900000", NONCE, b"{}")),
            (
                "path",
                sign(
                    "POST",
                    "/api/functions/x/rollback",
                    "1763900000",
                    NONCE,
                    b"{}",
                ),
            ),
            (
                "query",
                sign(
                    "POST",
                    &PATH.replace("dry=1", "dry=2"),
                    "1763900000",
                    NONCE,
                    b"{}",
                ),
            ),
            ("timestamp", sign("POST", PATH, "1763900001", NONCE, b"{}")),
            (
                "nonce",
                sign("POST", PATH, "1763900000", "nonce_0123456789abcdeF", b"{}"),
            ),
            ("body", sign("POST", PATH, "1763900000", NONCE, b"{ }")),
        ] {
            assert!(!signature_matches(KEY, &changed, &good), "{case}");
        }
        assert!(!signature_matches("sk_other", &original, &good), "key");
        let mut flipped = good.clone();
        flipped[31] ^= 1;
        assert!(!signature_matches(KEY, &original, &flipped), "last bit");
        assert!(!signature_matches(KEY, &original, &good[..31]), "truncated");
    }
}
