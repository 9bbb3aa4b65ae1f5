//! A registry speaking the OCI distribution API: the manifest digest a tag points to is the
//! registry's `Docker-Content-Digest`, the one thing Slipway records as "the digest". (The image
//! ID BuildKit reports is the config digest, which no registry can resolve.)

use reqwest::{StatusCode, header};

use super::RegistryError;
use crate::domain::{Digest, ImageRef};

/// Manifest media types Slipway can run; asking for all of them makes the registry answer with
/// the stored manifest rather than converting it (a conversion would change the digest).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone)]
pub struct OciRegistry {
    /// `host:port`, as in image references.
    host: String,
    http: reqwest::Client,
}

impl OciRegistry {
    pub fn new(host: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self::with_client(host, http))
    }

    /// Shares a client (its connection pool) across registries, as the api does.
    pub fn with_client(host: &str, http: reqwest::Client) -> Self {
        Self {
            host: host.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Loopback registries speak plain HTTP (as Docker assumes for 127.0.0.0/8).
    fn base_url(&self) -> String {
        let host = self.host.split(':').next().unwrap_or_default();
        let plain = host == "localhost" || host.starts_with("127.");
        format!("{}://{}", if plain { "http" } else { "https" }, self.host)
    }

    /// `HEAD /v2/<repository>/manifests/<reference>`: the response when the manifest exists,
    /// `None` when the registry says 404.
    async fn head_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<Option<reqwest::Response>, RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(),
            image.repository
        );
        let response = self
            .http
            .head(&url)
            .header(header::ACCEPT, MANIFEST_TYPES)
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("HEAD {url}: {e}")))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_server_error() => Err(RegistryError::Unavailable(format!("HEAD {url}: {s}"))),
            s if !s.is_success() => Err(RegistryError::Refused(format!("HEAD {url}: {s}"))),
            _ => Ok(Some(response)),
        }
    }

    /// Whether the registry still holds the manifest `digest` in `image`'s repository.
    pub async fn manifest_exists(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        Ok(self.head_manifest(image, digest.as_str()).await?.is_some())
    }

    /// The digest `image.tag` points to now, or `None` if the tag does not exist.
    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<Digest>, RegistryError> {
        let Some(response) = self.head_manifest(image, &image.tag).await? else {
            return Ok(None);
        };
        let raw = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RegistryError::Refused(format!(
                    "{}: no Docker-Content-Digest header",
                    image.tagged()
                ))
            })?;
        Digest::parse(raw)
            .map(Some)
            .map_err(|e| RegistryError::Refused(e.to_string()))
    }

    /// `DELETE /v2/<repository>/manifests/<digest>`: removes the manifest and every tag pointing
    /// at it from `image`'s repository. A manifest already gone is fine (purges are re-run).
    pub async fn delete_manifest(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base_url(),
            image.repository,
            digest.as_str()
        );
        let response = self
            .http
            .delete(&url)
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("DELETE {url}: {e}")))?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => Err(RegistryError::Refused(format!(
                "DELETE {url}: the registry does not allow deletes \
                 (distribution needs storage.delete.enabled: true)"
            ))),
            s if s.is_server_error() => {
                Err(RegistryError::Unavailable(format!("DELETE {url}: {s}")))
            }
            s => Err(RegistryError::Refused(format!("DELETE {url}: {s}"))),
        }
    }
}
