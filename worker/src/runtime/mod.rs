//! Where function instances run. An instance is one running copy of a deployment's pinned
//! image, reached at an endpoint (`address:PORT`) that only that instance answers on; the
//! driver places it, sandboxes it and removes it. `lifecycle` holds what every job does with
//! instances on top of a driver: start one and wait until it is ready (Initializer included),
//! switch traffic to it, stop the one it replaced.
//!
//! Two drivers, chosen by `SLIPWAY_RUNTIME`: one Docker engine (`docker`: a container per
//! instance) and a Docker Swarm (`swarm`: a service per instance, placed by the engine). A
//! Kubernetes driver (a Deployment of one replica and a Service per instance, or a Knative
//! Service) is a sibling file with the same operations and one more arm in [`Runtime`].

pub mod docker;
pub mod lifecycle;
mod placement;
pub mod swarm;

pub use docker::{DockerRuntime, connect};

use bollard::{
    Docker,
    models::NetworkCreateRequest,
    query_parameters::{InspectNetworkOptions, ListNetworksOptions},
};
pub use swarm::{Observed, SwarmRuntime};

use std::{collections::HashMap, time::Duration};

use slipway_shared::{
    domain::{Digest, FunctionLimits, ImageRef, PinnedImage},
    registry::PushCredentials,
};
use uuid::Uuid;

pub const FUNCTION_LABEL: &str = "dev.slipway.function";
pub const DEPLOYMENT_LABEL: &str = "dev.slipway.deployment";
/// The port every instance listens on (`$PORT`, as on Cloud Run). Each instance has an address
/// of its own, so they never compete for ports.
pub const FUNCTION_PORT: u16 = 8080;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The function itself is at fault (exited, never answered): retrying will not help.
    #[error("{0}")]
    Function(String),
    /// The instance used more memory than its limit and was killed.
    #[error("{0}")]
    OutOfMemory(String),
}

/// What to start: one instance of one deployment.
pub struct InstanceSpec<'a> {
    pub function_id: Uuid,
    pub deployment_id: Uuid,
    pub name: String,
    pub image: &'a PinnedImage,
    /// The deployment's env; the driver adds `PORT`.
    pub env: Vec<String>,
    pub limits: FunctionLimits,
    /// A read-only root filesystem with a writable `/tmp`.
    pub read_only_root: bool,
    /// What the engine pulls the image with.
    pub registry_auth: Option<PushCredentials>,
}

impl InstanceSpec<'_> {
    /// What an instance started from this spec runs: two specs with the same fingerprint start
    /// the same process with the same configuration. Names, labels and the deployment are not
    /// part of it; the registry login only matters for pulling.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let FunctionLimits {
            memory_mb,
            cpu_millis,
            pids,
        } = self.limits;
        hash.update(format!(
            "image={}\nmemory_mb={memory_mb}\ncpu_millis={cpu_millis}\npids={pids}\nread_only_root={}\n",
            self.image, self.read_only_root
        ));
        for var in &self.env {
            // Length-prefixed: a value containing a newline cannot pass for two variables.
            hash.update(format!("env {}:", var.len()));
            hash.update(var);
        }
        hex::encode(hash.finalize())
    }
}

/// A started instance: the container and the address the platform reaches it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub container_id: String,
    pub endpoint: String,
}

/// A 404 from the engine: the object is not (or no longer) there.
fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The network `request` names, made if the engine has none by that name. Two workers may race:
/// the names are unique per engine, so the loser's create fails and it finds the winner's.
async fn ensure_network(
    engine: &Docker,
    request: NetworkCreateRequest,
) -> Result<String, RuntimeError> {
    let name = request.name.clone();
    match engine
        .inspect_network(&name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(_) => return Ok(name),
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    if let Err(created) = engine.create_network(request).await {
        // Someone else made it meanwhile, or the engine refused: only the first is fine.
        engine
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
            .map_err(|_| RuntimeError::from(created))?;
    }
    Ok(name)
}

/// Removes the function's network once nothing of it runs; one already gone is fine.
async fn remove_network(engine: &Docker, function_id: Uuid) -> Result<(), RuntimeError> {
    match engine
        .remove_network(&docker::network_name(function_id))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An instance the runtime holds, as its labels tell: what the orphan sweep compares with the
/// deployments the database records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledInstance {
    pub id: String,
    pub function_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

fn label_id(labels: Option<&HashMap<String, String>>, label: &str) -> Option<Uuid> {
    labels?.get(label).and_then(|v| Uuid::parse_str(v).ok())
}

/// The engine filter for objects labelled as any function's.
fn any_function_label() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![FUNCTION_LABEL.to_owned()])])
}

/// The functions' networks on `engine` (name, function), found by label.
async fn function_networks(engine: &Docker) -> Result<Vec<(String, Uuid)>, RuntimeError> {
    let options = ListNetworksOptions {
        filters: Some(any_function_label()),
    };
    let networks = engine.list_networks(Some(options)).await?;
    Ok(networks
        .into_iter()
        .filter_map(|n| Some((n.name?, label_id(n.labels.as_ref(), FUNCTION_LABEL)?)))
        .collect())
}

/// Where instances run. Every job that starts, stops, restarts, releases or wakes an instance
/// goes through here; an instance's id is a container (docker) or a service (swarm).
#[derive(Clone)]
pub enum Runtime {
    Docker(DockerRuntime),
    Swarm(SwarmRuntime),
}

impl Runtime {
    /// The client that reaches functions on their endpoints (readiness, lifecycle hooks).
    pub fn http(&self) -> &reqwest::Client {
        match self {
            Self::Docker(d) => d.http(),
            Self::Swarm(s) => s.http(),
        }
    }

    /// Starts an instance of `spec`. `kept` is the instance a release left behind, if any: the
    /// swarm scales that service back to one replica (a wake), the one engine removes what is
    /// left of it and starts afresh.
    pub async fn start(
        &self,
        spec: &InstanceSpec<'_>,
        kept: Option<&str>,
    ) -> Result<Instance, RuntimeError> {
        match self {
            Self::Docker(d) => {
                if let Some(stale) = kept {
                    d.remove(stale).await?;
                }
                d.start(spec).await
            }
            Self::Swarm(s) => s.start(spec, kept).await,
        }
    }

    pub async fn wait_until_answering(
        &self,
        instance: &Instance,
        timeout: Duration,
    ) -> Result<Duration, RuntimeError> {
        match self {
            Self::Docker(d) => d.wait_until_answering(instance, timeout).await,
            Self::Swarm(s) => s.wait_until_answering(instance, timeout).await,
        }
    }

    /// The same instance afresh; its endpoint may change.
    pub async fn restart(
        &self,
        instance: &Instance,
        function_id: Uuid,
    ) -> Result<Instance, RuntimeError> {
        match self {
            Self::Docker(d) => d.restart(instance, function_id).await,
            Self::Swarm(s) => s.restart(instance).await,
        }
    }

    /// Stops and removes the instance; one already gone is fine.
    pub async fn remove(&self, instance_id: &str) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(d) => d.remove(instance_id).await,
            Self::Swarm(s) => s.remove(instance_id).await,
        }
    }

    /// Scale to zero. Returns whether the instance is kept for the wake (a swarm service at 0
    /// replicas) rather than removed (a container).
    pub async fn suspend(&self, instance_id: &str) -> Result<bool, RuntimeError> {
        match self {
            Self::Docker(d) => d.remove(instance_id).await.map(|()| false),
            Self::Swarm(s) => s.suspend(instance_id).await.map(|()| true),
        }
    }

    /// Every instance of the function, running or not, known to the database or not.
    pub async fn instances_of(&self, function_id: Uuid) -> Result<Vec<String>, RuntimeError> {
        match self {
            Self::Docker(d) => d.containers_of(function_id).await,
            Self::Swarm(s) => s.services_of(function_id).await,
        }
    }

    pub async fn remove_network(&self, function_id: Uuid) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(d) => d.remove_network(function_id).await,
            Self::Swarm(s) => s.remove_network(function_id).await,
        }
    }

    /// Every instance of every function the runtime holds, running or not.
    pub async fn labelled_instances(&self) -> Result<Vec<LabelledInstance>, RuntimeError> {
        match self {
            Self::Docker(d) => d.labelled_containers().await,
            Self::Swarm(s) => s.labelled_services().await,
        }
    }

    /// Every function network the runtime holds (name, function).
    pub async fn function_networks(&self) -> Result<Vec<(String, Uuid)>, RuntimeError> {
        match self {
            Self::Docker(d) => function_networks(d.engine()).await,
            Self::Swarm(s) => function_networks(s.manager()).await,
        }
    }

    /// Drops the images of `repository` from the engine that built them (and, with one engine,
    /// ran them). Swarm nodes keep their pulled copies until their engine's own image GC: the
    /// manager cannot reach into a node's image store.
    pub async fn remove_images(&self, repository: &str) -> Result<usize, RuntimeError> {
        match self {
            Self::Docker(d) => d.remove_images(repository).await,
            Self::Swarm(s) => s.builder().remove_images(repository).await,
        }
    }

    /// Drops one version's image from the engine's cache (its tag and `repository@digest`),
    /// leaving the repository's other versions: an alias's instance may run one of them.
    pub async fn remove_version_image(
        &self,
        image: &ImageRef,
        digest: Option<&Digest>,
    ) -> Result<(), RuntimeError> {
        let mut references = vec![image.tagged()];
        if let Some(digest) = digest {
            references.push(format!("{}@{}", image.name(), digest.as_str()));
        }
        match self {
            Self::Docker(d) => d.remove_image_references(&references).await,
            Self::Swarm(s) => s.builder().remove_image_references(&references).await,
        }
    }

    /// Cache-warm: puts the image where the next instance starts. A swarm node pulls when the
    /// engine places a task there, and which node that is only the engine knows.
    pub async fn pull(
        &self,
        repository: &str,
        digest: &str,
        credentials: Option<PushCredentials>,
    ) -> Result<(), RuntimeError> {
        match self {
            Self::Docker(d) => d.pull(repository, digest, credentials).await,
            Self::Swarm(_) => Ok(()),
        }
    }

    pub async fn logs_tail(&self, instance_id: &str) -> String {
        match self {
            Self::Docker(d) => d.logs_tail(instance_id).await,
            Self::Swarm(s) => s.logs_tail(instance_id).await,
        }
    }
}
