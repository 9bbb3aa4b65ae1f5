//! The Docker-engine runtime: one container per active deployment, host networking, listening on
//! `$PORT` (the Cloud Run contract). Containers carry labels naming their function and deployment
//! so a purge or a crash recovery can find every one of them.

mod ports;

pub use ports::pick_free_port;

use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
        ListImagesOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions,
        RestartContainerOptions, StopContainerOptions,
    },
};
use futures::StreamExt;
use tokio::time::Instant;
use uuid::Uuid;

pub const FUNCTION_LABEL: &str = "dev.slipway.function";
pub const DEPLOYMENT_LABEL: &str = "dev.slipway.deployment";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The function itself is at fault (exited, never answered): retrying will not help.
    #[error("{0}")]
    Function(String),
}

impl From<bollard::errors::Error> for RuntimeError {
    fn from(e: bollard::errors::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

pub struct ContainerSpec<'a> {
    pub function_id: Uuid,
    pub deployment_id: Uuid,
    pub name: String,
    /// `registry/repo@sha256:…`, never a bare tag.
    pub pinned_image: &'a str,
    pub env: Vec<String>,
}

#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    http: reqwest::Client,
}

/// API 1.41 is Docker 20.10's newest; bollard's default is newer than that daemon accepts.
pub fn connect(docker_host: &str) -> anyhow::Result<Docker> {
    let path = docker_host.strip_prefix("unix://").unwrap_or(docker_host);
    Ok(Docker::connect_with_unix(
        path,
        120,
        &bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )?)
}

impl DockerRuntime {
    pub fn new(docker: Docker) -> anyhow::Result<Self> {
        Ok(Self {
            docker,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// The client that reaches functions on their endpoints (readiness, lifecycle hooks); set a
    /// timeout per request, the default one is for readiness probes.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Creates and starts the container; returns its id.
    pub async fn start(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeError> {
        let labels = HashMap::from([
            (FUNCTION_LABEL.to_owned(), spec.function_id.to_string()),
            (DEPLOYMENT_LABEL.to_owned(), spec.deployment_id.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.pinned_image.to_owned()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                // A tiny init as PID 1 forwards SIGTERM to the function and reaps its children;
                // a server that is PID 1 itself usually ignores SIGTERM and waits to be killed.
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            platform: String::new(),
        };
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                return Err(RuntimeError::Function(format!(
                    "image not found: {message}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await.ok();
            return Err(e.into());
        }
        Ok(created.id)
    }

    /// Waits until something answers HTTP at `endpoint`; fails early if the container exits.
    pub async fn wait_until_answering(
        &self,
        container_id: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Duration, RuntimeError> {
        let started = Instant::now();
        let url = format!("http://{endpoint}/");
        loop {
            if self.http.get(&url).send().await.is_ok() {
                return Ok(started.elapsed());
            }
            let inspected = self
                .docker
                .inspect_container(container_id, None::<InspectContainerOptions>)
                .await?;
            let state = inspected.state.unwrap_or_default();
            if state.running != Some(true) {
                let logs = self.logs_tail(container_id).await;
                return Err(RuntimeError::Function(format!(
                    "the container exited (code {}) before answering on $PORT; last output:\n{logs}",
                    state.exit_code.unwrap_or_default()
                )));
            }
            if started.elapsed() > timeout {
                let logs = self.logs_tail(container_id).await;
                return Err(RuntimeError::Function(format!(
                    "nothing answered on $PORT within {timeout:?}; last output:\n{logs}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn logs_tail(&self, container_id: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "50".into(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(container_id, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
        out
    }

    /// Stops and starts the same container again (its filesystem and port stay).
    pub async fn restart(&self, container_id: &str) -> Result<(), RuntimeError> {
        let options = RestartContainerOptions {
            t: Some(5),
            signal: None,
        };
        self.docker
            .restart_container(container_id, Some(options))
            .await?;
        Ok(())
    }

    /// Stops and removes the container; one that is already gone is fine.
    pub async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        let stop = StopContainerOptions {
            t: Some(5),
            signal: None,
        };
        match self.docker.stop_container(container_id, Some(stop)).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 304,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let remove = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(container_id, Some(remove))
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every container labelled with the function, running or not: what the database knows of
    /// plus whatever a crashed job left behind.
    pub async fn containers_of(&self, function_id: Uuid) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{FUNCTION_LABEL}={function_id}")],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers.into_iter().filter_map(|c| c.id).collect())
    }

    /// Removes every reference to `repository` (`registry/name`) from the engine's store: the
    /// builds Docker's BuildKit exported there and the copies pulled to run them. References are
    /// removed one by one, never the image by id: an identical build of another function shares
    /// the image id and must keep its own tags.
    pub async fn remove_images(&self, repository: &str) -> Result<usize, RuntimeError> {
        let filters = HashMap::from([("reference".to_owned(), vec![repository.to_owned()])]);
        let options = ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let images = self.docker.list_images(Some(options)).await?;
        let ours = |reference: &&String| {
            reference
                .strip_prefix(repository)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
        };
        let references: Vec<&String> = images
            .iter()
            .flat_map(|image| image.repo_tags.iter().chain(&image.repo_digests))
            .filter(ours)
            .collect();
        for reference in &references {
            match self
                .docker
                .remove_image(reference, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_)
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(references.len())
    }

    /// Pulls `repository@digest` from its registry into the engine: the cache-warm of a runtime
    /// host. Pulling by digest cannot fetch anything but the recorded image.
    pub async fn pull(&self, repository: &str, digest: &str) -> Result<(), RuntimeError> {
        let options = CreateImageOptions {
            from_image: Some(repository.to_owned()),
            tag: Some(digest.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            match step {
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                }) => {
                    return Err(RuntimeError::Function(format!(
                        "{repository}@{digest} cannot be pulled: {message}"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
