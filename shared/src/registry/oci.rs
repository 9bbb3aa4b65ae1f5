//! A registry speaking the OCI distribution API: the manifest digest a tag points to is the
//! registry's `Docker-Content-Digest`, the one thing Slipway records as "the digest". (The image
//! ID BuildKit reports is the config digest, which no registry can resolve.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use reqwest::{Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};

use super::RegistryError;
use crate::domain::{Digest, ImageRef};

/// A registry account (`SLIPWAY_REGISTRY_USERNAME`, `SLIPWAY_REGISTRY_PASSWORD`): sent as basic
/// auth where the registry asks for it, and to its token service where it asks for a token.
#[derive(Clone, Debug)]
pub struct RegistryLogin {
    pub username: String,
    pub password: SecretString,
}

/// What a registry's 401 asks for (`WWW-Authenticate`, RFC 6750 and the distribution token spec).
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut values = HashMap::new();
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        values.insert(key, value.to_owned());
        rest = next;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: values.remove("realm")?,
            service: values.remove("service"),
            scope: values.remove("scope"),
        }),
        _ => None,
    }
}

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
    login: Option<RegistryLogin>,
    /// Bearer tokens by the scope they were issued for; a 401 with one fetches a new one.
    tokens: Arc<Mutex<HashMap<String, String>>>,
    /// Spoken to over plain HTTP although not on loopback (`SLIPWAY_INSECURE_REGISTRIES`).
    plain_http: bool,
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
            login: None,
            tokens: Arc::default(),
            plain_http: false,
        }
    }

    /// Speaks plain HTTP to this registry if `insecure` lists its host, as dockerd's
    /// `--insecure-registry` does: a registry on a private address of the platform's own.
    pub fn with_insecure(mut self, insecure: &[String]) -> Self {
        self.plain_http = insecure.iter().any(|h| h == &self.host);
        self
    }

    /// Authenticates as `login` where the registry asks for credentials.
    pub fn with_login(mut self, login: Option<RegistryLogin>) -> Self {
        self.login = login;
        self
    }

    pub fn login(&self) -> Option<&RegistryLogin> {
        self.login.as_ref()
    }

    /// Sends the request, answering the registry's challenge once if it answers 401: basic auth
    /// with the configured login, or a bearer token from its token service (cached per scope).
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope_hint: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let unavailable =
            |e: reqwest::Error| RegistryError::Unavailable(format!("{method} {url}: {e}"));
        let request = || {
            self.http
                .request(method.clone(), url)
                .header(header::ACCEPT, MANIFEST_TYPES)
        };
        let cached = self.cached_token(scope_hint);
        let first = match &cached {
            Some(token) => request().bearer_auth(token),
            None => request(),
        };
        let response = first.send().await.map_err(unavailable)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let retry = match challenge {
            Some(Challenge::Basic) => match &self.login {
                Some(login) => {
                    request().basic_auth(&login.username, Some(login.password.expose_secret()))
                }
                None => return Ok(response),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| scope_hint.to_owned());
                let token = self.fetch_token(&realm, service.as_deref(), &scope).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(scope_hint.to_owned(), token.clone());
                request().bearer_auth(token)
            }
            None => return Ok(response),
        };
        retry.send().await.map_err(unavailable)
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned()
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(login) = &self.login {
            request = request.basic_auth(&login.username, Some(login.password.expose_secret()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("token from {realm}: {e}")))?;
        match response.status() {
            s if s.is_server_error() => {
                return Err(RegistryError::Unavailable(format!(
                    "token from {realm}: {s}"
                )));
            }
            s if !s.is_success() => {
                return Err(RegistryError::Refused(format!("token from {realm}: {s}")));
            }
            _ => {}
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| RegistryError::Refused(format!("token from {realm}: {e}")))?;
        answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| RegistryError::Refused(format!("token from {realm}: no token")))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Loopback registries speak plain HTTP (as Docker assumes for 127.0.0.0/8), and so do the
    /// ones the operator listed as insecure.
    fn base_url(&self) -> String {
        let host = self.host.split(':').next().unwrap_or_default();
        let plain = self.plain_http || host == "localhost" || host.starts_with("127.");
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
        let scope = format!("repository:{}:pull", image.repository);
        let response = self.send(Method::HEAD, &url, &scope).await?;
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
        let scope = format!("repository:{}:delete", image.repository);
        let response = self.send(Method::DELETE, &url, &scope).await?;
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

#[cfg(test)]
mod tests;
