//! Amazon ECR through its own API (aws-sdk-ecr): `CreateRepository` before a function's first
//! push (ECR refuses pushes to repositories that do not exist), `DescribeImages` for what a tag or
//! digest is, `BatchDeleteImage` for purges, `GetAuthorizationToken` for the engine's pushes.
//! `SLIPWAY_REGISTRY` may carry a path (`<account>.dkr.ecr.<region>.amazonaws.com/slipway/functions`):
//! every function's repository is then named below it (`slipway/functions/<name>-<id8>`), which
//! is what the IAM policies of deploy/terraform grant. Credentials
//! and region come from the usual AWS environment; `SLIPWAY_ECR_ENDPOINT` points the client
//! elsewhere (moto in tests). A repository that does not exist holds nothing: reads answer
//! "not there" and deletes succeed, as they are retried after crashes.

use std::sync::Arc;

use aws_sdk_ecr::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{ImageFailureCode, ImageIdentifier},
};
use base64::Engine as _;
use tokio::sync::OnceCell;

use super::{PushCredentials, RegistryError};
use crate::domain::{Digest, ImageRef};

#[derive(Clone)]
pub struct EcrRegistry {
    /// `SLIPWAY_REGISTRY`: `<account>.dkr.ecr.<region>.amazonaws.com[/path]`, as in image
    /// references.
    host: String,
    endpoint: Option<String>,
    /// Built on first use: loading the AWS configuration is asynchronous and the registry is
    /// made where nothing can wait.
    client: Arc<OnceCell<Client>>,
}

/// Anything that did not reach ECR, a throttle or a server fault is worth retrying; what ECR
/// refused by name is not.
fn classify<E, R>(what: &str, error: SdkError<E, R>) -> RegistryError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let text = format!(
        "{what}: {}",
        aws_sdk_ecr::error::DisplayErrorContext(&error)
    );
    match error.as_service_error().and_then(|e| e.code()) {
        Some(code) if !code.contains("Throttl") && code != "ServerException" => {
            RegistryError::Refused(text)
        }
        _ => RegistryError::Unavailable(text),
    }
}

impl EcrRegistry {
    pub fn new(host: &str, endpoint: Option<&str>) -> Self {
        Self {
            host: host.trim_end_matches('/').to_owned(),
            endpoint: endpoint.map(str::to_owned),
            client: Arc::new(OnceCell::new()),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The registry's server, without the path: what the engine logs in to.
    fn server(&self) -> &str {
        self.host
            .split_once('/')
            .map_or(&self.host, |(server, _)| server)
    }

    /// ECR's name for `image`'s repository: everything between the server and the tag.
    fn repository_name(image: &ImageRef) -> String {
        let name = image.name();
        match name.split_once('/') {
            Some((_, repository)) => repository.to_owned(),
            None => image.repository.clone(),
        }
    }

    /// Creates `image`'s repository unless it exists: scanned on push, tags mutable (Slipway pins
    /// digests and verifies its tags itself). Safe to repeat.
    pub async fn ensure_repository(&self, image: &ImageRef) -> Result<(), RegistryError> {
        let answer = self
            .client()
            .await
            .create_repository()
            .repository_name(Self::repository_name(image))
            .image_scanning_configuration(
                aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_repository_already_exists_exception() => {
                Ok(())
            }
            Err(e) => Err(classify("CreateRepository", e)),
        }
    }

    /// The SDK client, for what Slipway does not wrap (tests create repositories with it).
    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                let mut config = aws_sdk_ecr::config::Builder::from(&shared);
                if let Some(endpoint) = &self.endpoint {
                    config = config.endpoint_url(endpoint);
                }
                Client::from_conf(config.build())
            })
            .await
    }

    /// The digest of the image with `id` in `image`'s repository, if there is one.
    async fn describe(
        &self,
        image: &ImageRef,
        id: ImageIdentifier,
    ) -> Result<Option<Digest>, RegistryError> {
        let answer = self
            .client()
            .await
            .describe_images()
            .repository_name(Self::repository_name(image))
            .image_ids(id)
            .send()
            .await;
        match answer {
            Ok(output) => output
                .image_details()
                .first()
                .and_then(|detail| detail.image_digest())
                .map(|raw| Digest::parse(raw).map_err(|e| RegistryError::Refused(e.to_string())))
                .transpose(),
            Err(SdkError::ServiceError(e))
                if e.err().is_image_not_found_exception()
                    || e.err().is_repository_not_found_exception() =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("DescribeImages", e)),
        }
    }

    pub async fn manifest_exists(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let id = ImageIdentifier::builder()
            .image_digest(digest.as_str())
            .build();
        Ok(self.describe(image, id).await?.is_some())
    }

    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<Digest>, RegistryError> {
        let id = ImageIdentifier::builder().image_tag(&image.tag).build();
        self.describe(image, id).await
    }

    pub async fn delete_manifest(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let id = ImageIdentifier::builder()
            .image_digest(digest.as_str())
            .build();
        let answer = self
            .client()
            .await
            .batch_delete_image()
            .repository_name(Self::repository_name(image))
            .image_ids(id)
            .send()
            .await;
        match answer {
            Ok(output) => {
                let refused: Vec<String> = output
                    .failures()
                    .iter()
                    .filter(|f| f.failure_code() != Some(&ImageFailureCode::ImageNotFound))
                    .map(|f| {
                        format!(
                            "{:?}: {}",
                            f.failure_code(),
                            f.failure_reason().unwrap_or("")
                        )
                    })
                    .collect();
                if refused.is_empty() {
                    Ok(())
                } else {
                    Err(RegistryError::Refused(format!(
                        "BatchDeleteImage {}@{digest}: {}",
                        Self::repository_name(image),
                        refused.join("; ")
                    )))
                }
            }
            Err(SdkError::ServiceError(e)) if e.err().is_repository_not_found_exception() => Ok(()),
            Err(e) => Err(classify("BatchDeleteImage", e)),
        }
    }

    /// `AWS` and a token valid for twelve hours, for `docker push`.
    pub async fn push_credentials(&self) -> Result<PushCredentials, RegistryError> {
        let output = self
            .client()
            .await
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| classify("GetAuthorizationToken", e))?;
        let data = output
            .authorization_data()
            .first()
            .and_then(|d| d.authorization_token())
            .ok_or_else(|| RegistryError::Refused("GetAuthorizationToken: no token".into()))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| RegistryError::Refused("GetAuthorizationToken: not base64".into()))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            RegistryError::Refused("GetAuthorizationToken: not user:password".into())
        })?;
        Ok(PushCredentials {
            username: username.to_owned(),
            password: password.to_owned(),
            server: self.server().to_owned(),
        })
    }
}
