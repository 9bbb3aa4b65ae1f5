//! Pushing an image from the Docker engine's store to its registry. Docker's embedded BuildKit
//! cannot push (its exporters are moby, local and tar), so the engine pushes what it built.

use bollard::{Docker, auth::DockerCredentials, query_parameters::PushImageOptions};
use futures::StreamExt;
use slipway_shared::{domain::ImageRef, registry::PushCredentials};

use super::RegistryError;

/// The registry's credentials as the engine takes them, for pushes and pulls alike.
pub fn engine_credentials(credentials: PushCredentials) -> DockerCredentials {
    DockerCredentials {
        username: Some(credentials.username),
        password: Some(credentials.password),
        serveraddress: Some(credentials.server),
        ..Default::default()
    }
}

/// Pushes `image.tagged()`, with the registry's credentials if it needs any; returns the
/// engine's progress lines for the deployment log.
pub async fn push_through_engine(
    docker: &Docker,
    image: &ImageRef,
    credentials: Option<PushCredentials>,
) -> Result<Vec<String>, RegistryError> {
    let options = PushImageOptions {
        tag: Some(image.tag.clone()),
        platform: None,
    };
    let credentials = credentials.map(engine_credentials);
    let mut stream = docker.push_image(&image.name(), Some(options), credentials);
    let mut lines = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| classify(&e))?;
        if let Some(detail) = info.error_detail {
            let message = detail.message.unwrap_or_else(|| "push failed".into());
            // The engine reports registry outages as error lines too; they are worth a retry.
            return Err(RegistryError::Unavailable(message));
        }
        if let Some(status) = info.status
            && !status.is_empty()
            && lines.last() != Some(&status)
        {
            lines.push(status);
        }
    }
    Ok(lines)
}

fn classify(error: &bollard::errors::Error) -> RegistryError {
    use bollard::errors::Error::*;
    match error {
        DockerResponseServerError {
            status_code,
            message,
        } if *status_code < 500 => RegistryError::Refused(format!("{status_code}: {message}")),
        other => RegistryError::Unavailable(other.to_string()),
    }
}
