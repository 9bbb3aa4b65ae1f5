//! Registries Slipway pushes to and reads back from, behind one enum: the generic OCI
//! distribution API (`oci`) and Amazon ECR through its own API (`ecr`). Reading — the digest a
//! tag points to, whether a digest exists, `verify` — is shared by the worker (push, purge,
//! pre-start checks) and the api (`POST /api/functions/{id}/verify`); only the worker writes.

mod ecr;
mod oci;

pub use ecr::EcrRegistry;
pub use oci::{OciRegistry, RegistryLogin};

use crate::{
    config::{RegistryConfig, RegistryKind},
    domain::{Digest, ImageRef, Verification},
};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Network failure or a 5xx: worth retrying.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("registry refused the request: {0}")]
    Refused(String),
}

/// Credentials the Docker engine needs to push to the registry, and to pull from it.
#[derive(Debug, Clone)]
pub struct PushCredentials {
    pub username: String,
    pub password: String,
    pub server: String,
}

#[derive(Clone)]
pub enum Registry {
    Oci(OciRegistry),
    Ecr(EcrRegistry),
}

impl Registry {
    /// The registry `SLIPWAY_REGISTRY` (+ `SLIPWAY_REGISTRY_KIND`) names.
    pub fn from_config(config: &RegistryConfig) -> anyhow::Result<Self> {
        Ok(match config.kind {
            RegistryKind::Oci => Self::Oci(
                OciRegistry::new(&config.host)?
                    .with_login(config.login.clone())
                    .with_insecure(&config.insecure),
            ),
            RegistryKind::Ecr => Self::Ecr(EcrRegistry::new(
                &config.host,
                config.ecr_endpoint.as_deref(),
            )),
        })
    }

    /// `host[:port]`, as in image references.
    pub fn host(&self) -> &str {
        match self {
            Self::Oci(r) => r.host(),
            Self::Ecr(r) => r.host(),
        }
    }

    /// Whether the registry still holds the manifest `digest` in `image`'s repository.
    pub async fn manifest_exists(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        match self {
            Self::Oci(r) => r.manifest_exists(image, digest).await,
            Self::Ecr(r) => r.manifest_exists(image, digest).await,
        }
    }

    /// The digest `image.tag` points to now, or `None` if the tag does not exist.
    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<Digest>, RegistryError> {
        match self {
            Self::Oci(r) => r.manifest_digest(image).await,
            Self::Ecr(r) => r.manifest_digest(image).await,
        }
    }

    /// Removes the manifest `digest` (and the tags on it); one already gone is fine.
    pub async fn delete_manifest(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        match self {
            Self::Oci(r) => r.delete_manifest(image, digest).await,
            Self::Ecr(r) => r.delete_manifest(image, digest).await,
        }
    }

    /// Makes sure `image`'s repository can be pushed to: ECR needs it created first; an OCI
    /// registry makes repositories on push.
    pub async fn ensure_repository(&self, image: &ImageRef) -> Result<(), RegistryError> {
        match self {
            Self::Oci(_) => Ok(()),
            Self::Ecr(r) => r.ensure_repository(image).await,
        }
    }

    /// Where the recorded tag and digest stand now: see [`Verification`].
    pub async fn verify(
        &self,
        image: &ImageRef,
        recorded: &Digest,
    ) -> Result<Verification, RegistryError> {
        let recorded_present = self.manifest_exists(image, recorded).await?;
        let tag_points_to = self.manifest_digest(image).await?;
        Ok(Verification::classify(
            recorded,
            recorded_present,
            tag_points_to,
        ))
    }

    /// What the engine must present to push or pull here: none for an open OCI registry, its
    /// login for one that asks, a short-lived token for ECR.
    pub async fn push_credentials(&self) -> Result<Option<PushCredentials>, RegistryError> {
        match self {
            Self::Oci(r) => Ok(r.login().map(|login| PushCredentials {
                username: login.username.clone(),
                password: secrecy::ExposeSecret::expose_secret(&login.password).to_owned(),
                server: r.host().to_owned(),
            })),
            Self::Ecr(r) => r.push_credentials().await.map(Some),
        }
    }
}
