//! Image references and content digests. Slipway records a tag for humans and a manifest digest
//! for machines, and runs only `repository@digest`.

use std::fmt;

/// A manifest digest, `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sha256 digest: {0:?}")]
pub struct DigestError(pub String);

impl Digest {
    pub fn parse(raw: &str) -> Result<Self, DigestError> {
        let hex = raw
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError(raw.to_owned()))?;
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DigestError(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `registry/repository:tag` for one version of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// Repository `<name>-<first 8 hex of the function id>`: readable, and distinct for two
    /// owners' functions of the same name. Tag `v<version>`.
    pub fn for_version(
        registry: &str,
        name: &super::FunctionName,
        function_id: uuid::Uuid,
        version: i32,
    ) -> Self {
        let short = function_id.simple().to_string();
        Self {
            registry: registry.trim_end_matches('/').to_owned(),
            repository: format!("{}-{}", name.repository_component(), &short[..8]),
            tag: format!("v{version}"),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`.
    pub fn tagged(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }

    /// `registry/repository@digest`: what the runtime starts.
    pub fn pinned(&self, digest: &Digest) -> PinnedImage {
        PinnedImage {
            name: self.name(),
            digest: digest.clone(),
        }
    }

    /// Splits `registry/repo/path:tag` as recorded in the database.
    pub fn parse_tagged(raw: &str) -> Option<Self> {
        let (registry, rest) = raw.split_once('/')?;
        let (repository, tag) = rest.rsplit_once(':')?;
        if registry.is_empty() || repository.is_empty() || tag.is_empty() || tag.contains('/') {
            return None;
        }
        Some(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

/// `registry/repository@sha256:…`: the only form of image a runtime is given. It can only be
/// made from a repository and a parsed [`Digest`], never from a tag, so nothing can start
/// whatever a tag points at today.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PinnedImage {
    name: String,
    digest: Digest,
}

impl PinnedImage {
    /// `registry/repository`, without the digest.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl fmt::Display for PinnedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.digest)
    }
}

/// What the registry says about a recorded tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The tag still points at the recorded digest.
    Intact,
    /// The tag was moved (or removed) but the recorded digest is still there, so the function can
    /// keep running exactly what it ran.
    Drifted { current: Option<Digest> },
    /// The recorded digest is gone.
    Lost {
        failure: super::ImageFailure,
        current: Option<Digest>,
    },
}

impl Verification {
    pub fn classify(
        recorded: &Digest,
        recorded_present: bool,
        tag_points_to: Option<Digest>,
    ) -> Self {
        match (recorded_present, tag_points_to) {
            (true, Some(current)) if &current == recorded => Self::Intact,
            (true, current) => Self::Drifted { current },
            (false, Some(current)) => Self::Lost {
                failure: super::ImageFailure::TagOverwritten,
                current: Some(current),
            },
            (false, None) => Self::Lost {
                failure: super::ImageFailure::NotFound,
                current: None,
            },
        }
    }

    /// The stable name API answers use.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Intact => "intact",
            Self::Drifted { .. } => "image_drift",
            Self::Lost { failure, .. } => failure.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FunctionName;

    #[test]
    fn digest_accepts_only_sha256_hex() {
        let ok = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(Digest::parse(&ok).unwrap().as_str(), ok);
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
    }

    #[test]
    fn image_ref_round_trips_through_its_tagged_form() {
        let id = uuid::Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
        let name = FunctionName::parse("my_function").unwrap();
        let image = ImageRef::for_version("127.0.0.1:5000", &name, id, 3);
        assert_eq!(image.tagged(), "127.0.0.1:5000/my-function-550e8400:v3");
        assert_eq!(ImageRef::parse_tagged(&image.tagged()), Some(image.clone()));
        let digest = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert_eq!(
            image.pinned(&digest).to_string(),
            format!(
                "127.0.0.1:5000/my-function-550e8400@sha256:{}",
                "0".repeat(64)
            )
        );
    }

    #[test]
    fn verification_tells_drift_from_loss() {
        let a = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let b = Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
        assert_eq!(
            Verification::classify(&a, true, Some(a.clone())),
            Verification::Intact
        );
        assert_eq!(
            Verification::classify(&a, true, Some(b.clone())),
            Verification::Drifted {
                current: Some(b.clone())
            }
        );
        assert_eq!(
            Verification::classify(&a, true, None),
            Verification::Drifted { current: None }
        );
        let lost = Verification::classify(&a, false, Some(b));
        assert_eq!(lost.code(), "image_tag_overwritten");
        assert_eq!(
            Verification::classify(&a, false, None).code(),
            "image_not_found"
        );
    }
}
