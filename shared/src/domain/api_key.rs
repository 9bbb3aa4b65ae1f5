//! API keys: random secrets shown once; only their SHA-256 is stored.

use rand::Rng;
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
        let mut rng = rand::rng();
        let mut part = |n: usize| -> String {
            (0..n)
                .map(|_| Self::ALPHABET[rng.random_range(0..Self::ALPHABET.len())] as char)
                .collect()
        };
        let prefix = part(8);
        let secret = part(32);
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
}
