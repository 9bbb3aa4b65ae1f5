//! API keys: random secrets shown once; only their SHA-256 is stored. Each key made now also has
//! a signing secret, shown once beside it, which signs requests and never travels on one.

use rand::Rng;

use crate::secrets::{SecretError, SecretsKey};
use sha2::{Digest as _, Sha256};

/// A freshly minted key, `sk_<8-char prefix>_<32-char secret>`.
pub struct ApiKey {
    full: String,
}

/// What the database keeps of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyHash(pub [u8; 32]);

impl ApiKey {
    const ALPHABET: &'static [u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

    pub fn generate() -> Self {
        let prefix = random_chars(8);
        let secret = random_chars(32);
        Self {
            full: format!("sk_{prefix}_{secret}"),
        }
    }

    /// The whole key, to hand to its owner exactly once.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// `sk_xxxxxxxx`: enough to recognise a key in a listing, useless to authenticate.
    pub fn prefix(&self) -> &str {
        &self.full[..11]
    }

    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash::of(&self.full)
    }
}

/// What signs a key's requests (`v2` signatures): `ss_<40 chars>`. Unlike the key, the server
/// must be able to read it back (checking an HMAC takes the secret itself): it keeps it sealed
/// with `SLIPWAY_SECRETS_KEY`.
pub struct SigningSecret {
    full: String,
}

impl SigningSecret {
    pub fn generate() -> Self {
        Self {
            full: format!("ss_{}", random_chars(40)),
        }
    }

    /// The secret, to hand to its owner exactly once.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// Sealed for the key whose prefix is `key_prefix`: what `api_keys.signing_secret` holds, so
    /// a copy of the database (a backup, a replica) signs nothing without the secrets key.
    pub fn seal(&self, secrets_key: &SecretsKey, key_prefix: &str) -> Result<String, SecretError> {
        secrets_key.seal(&Self::context(key_prefix), &self.full)
    }

    /// The secret of a sealed `api_keys.signing_secret`.
    pub fn open(
        sealed: &str,
        secrets_key: &SecretsKey,
        key_prefix: &str,
    ) -> Result<String, SecretError> {
        secrets_key.open(&Self::context(key_prefix), sealed)
    }

    fn context(key_prefix: &str) -> String {
        format!("api_keys.signing_secret:{key_prefix}")
    }
}

fn random_chars(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ApiKey::ALPHABET[rng.random_range(0..ApiKey::ALPHABET.len())] as char)
        .collect()
}

impl ApiKeyHash {
    /// Hashes whatever a caller presented; unknown shapes simply match no stored key.
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_hash_consistently() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 3 + 8 + 1 + 32);
        assert!(a.expose().starts_with(a.prefix()));
        assert_eq!(a.hash(), ApiKeyHash::of(a.expose()));
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn signing_secrets_have_the_shape_the_database_checks() {
        let secret = SigningSecret::generate();
        assert_eq!(secret.expose().len(), 3 + 40);
        assert!(secret.expose().starts_with("ss_"));
        assert!(
            secret.expose()[3..]
                .bytes()
                .all(|b| ApiKey::ALPHABET.contains(&b))
        );
        assert_ne!(secret.expose(), SigningSecret::generate().expose());
    }

    #[test]
    fn a_sealed_signing_secret_opens_only_for_its_key() {
        let secrets_key = SecretsKey::generate().unwrap();
        let secret = SigningSecret::generate();
        let sealed = secret.seal(&secrets_key, "sk_aaaaaaaa").unwrap();
        assert!(!sealed.contains(secret.expose()));
        assert_eq!(
            SigningSecret::open(&sealed, &secrets_key, "sk_aaaaaaaa").unwrap(),
            secret.expose()
        );
        assert!(SigningSecret::open(&sealed, &secrets_key, "sk_bbbbbbbb").is_err());
        let other = SecretsKey::generate().unwrap();
        assert!(SigningSecret::open(&sealed, &other, "sk_aaaaaaaa").is_err());
    }
}
