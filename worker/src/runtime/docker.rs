//! The one-engine driver: every instance is a container on one Docker engine, in a bridge
//! network of its own function (`slw<id>`), sandboxed (no capabilities, no new privileges, an
//! init, memory / CPU / pids limits, a read-only root unless the function opts out, not root
//! unless the image says so) and reached at its own address on that network. The engine sits
//! in a network namespace whose firewall (scripts/lib/function-firewall.sh) keeps functions from
//! everything but the platform's connections to them. Containers and networks carry labels
//! naming their function (and deployment) so a purge or a crash recovery finds every one.

use std::{collections::HashMap, time::Duration};

use bollard::auth::DockerCredentials;
use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig, NetworkCreateRequest},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
        ListContainersOptions, ListImagesOptions, LogsOptions, RemoveContainerOptions,
        RemoveImageOptions, RestartContainerOptions, StopContainerOptions,
    },
};
use futures::StreamExt;
use slipway_shared::{domain::PinnedImage, registry::PushCredentials};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    DEPLOYMENT_LABEL, FUNCTION_LABEL, FUNCTION_PORT, Instance, InstanceSpec, RuntimeError,
    not_found,
};

/// Not a bridge name Docker would pick (`br-…`), and the prefix the function firewall matches
/// (`slw+`): a network the firewall does not cover cannot be made by this driver.
const BRIDGE_PREFIX: &str = "slw";
/// A function that runs as root in its image runs as `nobody` here instead.
const UNPRIVILEGED_USER: &str = "65534:65534";

impl From<bollard::errors::Error> for RuntimeError {
    fn from(e: bollard::errors::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
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

/// The network every instance of `function_id` joins, and nothing else does.
pub fn network_name(function_id: Uuid) -> String {
    format!("slipway-fn-{}", function_id.simple())
}

/// Linux allows 15 bytes; 12 hex digits of the id keep two functions' bridges apart.
fn bridge_name(function_id: Uuid) -> String {
    format!("{BRIDGE_PREFIX}{}", &function_id.simple().to_string()[..12])
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

    /// The function's bridge network, made on its first instance.
    async fn ensure_network(&self, function_id: Uuid) -> Result<String, RuntimeError> {
        let request = NetworkCreateRequest {
            name: network_name(function_id),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([
                (
                    "com.docker.network.bridge.name".to_owned(),
                    bridge_name(function_id),
                ),
                // No host-side NAT: what a function may reach is the firewall's to say.
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                    "false".to_owned(),
                ),
            ])),
            labels: Some(HashMap::from([(
                FUNCTION_LABEL.to_owned(),
                function_id.to_string(),
            )])),
            ..Default::default()
        };
        super::ensure_network(&self.docker, request).await
    }

    pub async fn remove_network(&self, function_id: Uuid) -> Result<(), RuntimeError> {
        super::remove_network(&self.docker, function_id).await
    }

    /// Who the instance runs as: the image's own user, unless that is root.
    pub(super) async fn user_for(&self, image: &str) -> Result<String, RuntimeError> {
        let inspected = match self.docker.inspect_image(image).await {
            Ok(inspected) => inspected,
            Err(e) if not_found(&e) => {
                return Err(RuntimeError::Function(format!("image not found: {image}")));
            }
            Err(e) => return Err(e.into()),
        };
        let user = inspected.config.and_then(|c| c.user).unwrap_or_default();
        let name = user.split(':').next().unwrap_or_default();
        Ok(if name.is_empty() || name == "root" || name == "0" {
            UNPRIVILEGED_USER.to_owned()
        } else {
            user
        })
    }

    /// Creates and starts the instance on its function's network; returns it with its address.
    pub async fn start(&self, spec: &InstanceSpec<'_>) -> Result<Instance, RuntimeError> {
        let network = self.ensure_network(spec.function_id).await?;
        let image = spec.image.to_string();
        let user = self.user_for(&image).await?;
        let labels = HashMap::from([
            (FUNCTION_LABEL.to_owned(), spec.function_id.to_string()),
            (DEPLOYMENT_LABEL.to_owned(), spec.deployment_id.to_string()),
        ]);
        let limits = spec.limits;
        let mut env = spec.env.clone();
        env.push(format!("PORT={FUNCTION_PORT}"));
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(env),
            user: Some(user),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network),
                // A tiny init as PID 1 forwards SIGTERM to the function and reaps its children;
                // a server that is PID 1 itself usually ignores SIGTERM and waits to be killed.
                init: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                memory: Some(limits.memory_bytes()),
                // No swap beyond the memory limit: past it the instance is OOM-killed, visibly.
                memory_swap: Some(limits.memory_bytes()),
                nano_cpus: Some(limits.nano_cpus()),
                pids_limit: Some(i64::from(limits.pids)),
                readonly_rootfs: Some(spec.read_only_root),
                tmpfs: spec.read_only_root.then(|| {
                    HashMap::from([(
                        "/tmp".to_owned(),
                        "rw,nosuid,nodev,mode=1777,size=64m".to_owned(),
                    )])
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            platform: String::new(),
        };
        let mut created = self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await;
        if let Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) = &created
            && self
                .remove_leftover_of(&spec.name, spec.deployment_id)
                .await?
        {
            created = self.docker.create_container(Some(options), body).await;
        }
        let created = match created {
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
        let started = async {
            self.docker.start_container(&created.id, None).await?;
            self.endpoint_of(&created.id, spec.function_id).await
        }
        .await;
        match started {
            Ok(endpoint) => Ok(Instance {
                container_id: created.id,
                endpoint,
            }),
            Err(e) => {
                self.remove(&created.id).await.ok();
                Err(e)
            }
        }
    }

    /// `address:PORT` of the container on its function's network: an address only that
    /// container holds, so whatever answers there is the instance itself.
    async fn endpoint_of(
        &self,
        container_id: &str,
        function_id: Uuid,
    ) -> Result<String, RuntimeError> {
        let inspected = self
            .docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await?;
        let address = inspected
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut networks| networks.remove(&network_name(function_id)))
            .and_then(|n| n.ip_address)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                RuntimeError::Unavailable(format!(
                    "container {container_id:.12} has no address on its function's network"
                ))
            })?;
        Ok(format!("{address}:{FUNCTION_PORT}"))
    }

    /// Waits until something answers HTTP on the instance's address; fails early if the
    /// container exits, saying so when it was killed for its memory.
    pub async fn wait_until_answering(
        &self,
        instance: &Instance,
        timeout: Duration,
    ) -> Result<Duration, RuntimeError> {
        let started = Instant::now();
        let url = format!("http://{}/", instance.endpoint);
        loop {
            if self.http.get(&url).send().await.is_ok() {
                return Ok(started.elapsed());
            }
            let inspected = self
                .docker
                .inspect_container(&instance.container_id, None::<InspectContainerOptions>)
                .await?;
            let state = inspected.state.unwrap_or_default();
            if state.running != Some(true) {
                let logs = self.logs_tail(&instance.container_id).await;
                if state.oom_killed == Some(true) {
                    return Err(RuntimeError::OutOfMemory(format!(
                        "the instance was killed at its memory limit before answering on $PORT; last output:\n{logs}"
                    )));
                }
                return Err(RuntimeError::Function(format!(
                    "the container exited (code {}) before answering on $PORT; last output:\n{logs}",
                    state.exit_code.unwrap_or_default()
                )));
            }
            if started.elapsed() > timeout {
                let logs = self.logs_tail(&instance.container_id).await;
                return Err(RuntimeError::Function(format!(
                    "nothing answered on $PORT within {timeout:?}; last output:\n{logs}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the engine killed the container for exceeding its memory.
    pub async fn was_oom_killed(&self, container_id: &str) -> Result<bool, RuntimeError> {
        let inspected = match self
            .docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let state = inspected.state.unwrap_or_default();
        Ok(state.running != Some(true) && state.oom_killed == Some(true))
    }

    /// Containers of functions the engine killed for their memory, as they die: every
    /// instance's `die` event, kept when the engine says it was an OOM kill. Ends when the
    /// engine's event stream does (the caller reconnects).
    pub fn oom_killed(&self) -> impl futures::Stream<Item = Result<String, RuntimeError>> + '_ {
        let options = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("event".to_owned(), vec!["die".to_owned()]),
                ("label".to_owned(), vec![FUNCTION_LABEL.to_owned()]),
            ])),
            ..Default::default()
        };
        self.docker
            .events(Some(options))
            .filter_map(move |event| async move {
                let container_id = match event {
                    Ok(event) => event.actor.and_then(|a| a.id)?,
                    Err(e) => return Some(Err(RuntimeError::from(e))),
                };
                match self.was_oom_killed(&container_id).await {
                    Ok(true) => Some(Ok(container_id)),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                }
            })
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

    /// Stops and starts the same container again (its filesystem stays; its address may not,
    /// so the instance comes back with the one it has now).
    pub async fn restart(
        &self,
        instance: &Instance,
        function_id: Uuid,
    ) -> Result<Instance, RuntimeError> {
        let options = RestartContainerOptions {
            t: Some(5),
            signal: None,
        };
        self.docker
            .restart_container(&instance.container_id, Some(options))
            .await?;
        Ok(Instance {
            container_id: instance.container_id.clone(),
            endpoint: self
                .endpoint_of(&instance.container_id, function_id)
                .await?,
        })
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

    /// The name is taken by a container of the same deployment: a run that died between making
    /// its instance and recording it left it (the names are the deployment's). Only the run that
    /// holds the deployment's claim starts instances, so it goes. Returns whether it did; a
    /// container of anything else keeps its name.
    async fn remove_leftover_of(
        &self,
        name: &str,
        deployment_id: Uuid,
    ) -> Result<bool, RuntimeError> {
        let existing = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(existing) => existing,
            Err(e) if super::not_found(&e) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        let labels = existing.config.and_then(|c| c.labels);
        if super::label_id(labels.as_ref(), DEPLOYMENT_LABEL) != Some(deployment_id) {
            return Ok(false);
        }
        tracing::warn!(name, %deployment_id, "removing an earlier run's unrecorded instance");
        self.remove(existing.id.as_deref().unwrap_or(name)).await?;
        Ok(true)
    }

    /// Every container labelled as a function's, with its labels and age.
    pub async fn labelled_containers(&self) -> Result<Vec<super::LabelledInstance>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(super::any_function_label()),
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                Some(super::LabelledInstance {
                    function_id: super::label_id(c.labels.as_ref(), FUNCTION_LABEL),
                    deployment_id: super::label_id(c.labels.as_ref(), DEPLOYMENT_LABEL),
                    created: c
                        .created
                        .and_then(|at| chrono::DateTime::from_timestamp(at, 0)),
                    id: c.id?,
                })
            })
            .collect())
    }

    pub(super) fn engine(&self) -> &Docker {
        &self.docker
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
            self.remove_image_reference(reference, false).await?;
        }
        Ok(references.len())
    }

    /// Drops these references (a version's tag and its `repository@digest`) from the engine's
    /// cache; the image goes with its last reference. One still used by a container (another
    /// version's instance started from the same digest) stays, as does one already gone.
    pub async fn remove_image_references(&self, references: &[String]) -> Result<(), RuntimeError> {
        for reference in references {
            self.remove_image_reference(reference, true).await?;
        }
        Ok(())
    }

    /// Drops one reference from the engine's cache; one already gone is fine, and so is one a
    /// container still uses when `in_use_stays`.
    async fn remove_image_reference(
        &self,
        reference: &str,
        in_use_stays: bool,
    ) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_image(reference, None::<RemoveImageOptions>, None)
            .await
        {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) if in_use_stays => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls `repository@digest` from its registry into the engine: the cache-warm of a runtime
    /// host. Pulling by digest cannot fetch anything but the recorded image.
    pub async fn pull(
        &self,
        repository: &str,
        digest: &str,
        credentials: Option<PushCredentials>,
    ) -> Result<(), RuntimeError> {
        // By digest, the engine's copy is exactly the image asked for (a redeploy of the same
        // build, a rollback); the registry is still asked for it before any start.
        match self
            .docker
            .inspect_image(&format!("{repository}@{digest}"))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.pull_with(
            repository,
            digest,
            credentials.map(crate::registry::engine_credentials),
        )
        .await
    }

    pub(super) async fn pull_reference(
        &self,
        image: &PinnedImage,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        self.pull_with(image.name(), image.digest().as_str(), credentials)
            .await
    }

    async fn pull_with(
        &self,
        repository: &str,
        digest: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        let options = CreateImageOptions {
            from_image: Some(repository.to_owned()),
            tag: Some(digest.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, credentials);
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
