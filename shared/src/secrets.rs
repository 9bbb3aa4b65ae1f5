//! Secrets at rest: what Slipway must keep in clear to use (a webhook secret checks HMACs, a
//! token or an ssh key fetches a repository) is stored sealed with AES-256-GCM under
//! `SLIPWAY_SECRETS_KEY`, so a copy of the database (a backup, a replica, a dump) holds no usable
//! credential. Each value is bound to where it is stored (its row and column, as associated
//! data), so sealed values cannot be swapped between rows.
//!
//! Format: `v1:` + base64(nonce ‖ ciphertext ‖ tag), a fresh random 96-bit nonce per value.

use std::fmt;

use base64::Engine;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

const VERSION: &str = "v1:";

/// The 32-byte key, from 64 hex digits or base64 (`openssl rand -hex 32`).
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("SLIPWAY_SECRETS_KEY must be 32 bytes, as 64 hex digits or base64")]
    BadKey,
    #[error("the sealed value is not in Slipway's format")]
    Malformed,
    /// Sealed under another key, or for another place, or altered.
    #[error("the sealed value does not open with this key")]
    WrongKey,
    #[error("no random bytes for a nonce")]
    Random,
}

impl SecretsKey {
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let raw = raw.trim();
        let bytes = hex::decode(raw)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(raw).ok())
            .ok_or(SecretError::BadKey)?;
        Ok(Self(bytes.try_into().map_err(|_| SecretError::BadKey)?))
    }

    pub fn generate() -> Result<Self, SecretError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SecretError::Random)?;
        Ok(Self(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("the key is 32 bytes"))
    }

    /// Seals `plaintext` for the place named by `context` (e.g. `git_bindings.secret:<id>`).
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = plaintext.as_bytes().to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{VERSION}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens a value `seal` made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let encoded = sealed.strip_prefix(VERSION).ok_or(SecretError::Malformed)?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Malformed);
        }
        let mut ciphertext = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SecretError::Malformed)?;
        let plaintext = self
            .aead()
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut ciphertext)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plaintext.to_vec()).map_err(|_| SecretError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SecretsKey::generate().unwrap();
        let sealed = key
            .seal("git_bindings.secret:1", "hunter2-hunter2")
            .unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            key.open("git_bindings.secret:1", &sealed).unwrap(),
            "hunter2-hunter2"
        );
        assert!(matches!(
            key.open("git_bindings.secret:2", &sealed),
            Err(SecretError::WrongKey)
        ));
        let other = SecretsKey::generate().unwrap();
        assert!(matches!(
            other.open("git_bindings.secret:1", &sealed),
            Err(SecretError::WrongKey)
        ));
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(key.open("git_bindings.secret:1", &altered).is_err());
        assert!(matches!(
            key.open("git_bindings.secret:1", "plain"),
            Err(SecretError::Malformed)
        ));
        assert_ne!(
            key.seal("c", "same").unwrap(),
            key.seal("c", "same").unwrap(),
            "a fresh nonce per value"
        );
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_never_print() {
        let key = SecretsKey::generate().unwrap();
        let hex = key.to_hex();
        assert_eq!(SecretsKey::parse(&hex).unwrap().to_hex(), hex);
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&hex).unwrap());
        assert_eq!(SecretsKey::parse(&b64).unwrap().to_hex(), hex);
        assert!(SecretsKey::parse("abcd").is_err());
        assert!(!format!("{key:?}").contains(&hex[..8]));
    }
}
