//! Where function instances run. An instance is one running copy of a deployment's pinned
//! image, reached at an endpoint (`address:PORT`) that only that instance answers on; the
//! driver places it, sandboxes it and removes it. `lifecycle` holds what every job does with
//! instances on top of a driver: start one and wait until it is ready (Initializer included),
//! switch traffic to it, stop the one it replaced.
//!
//! Today's driver is one Docker engine (`docker`). A driver for another engine (a Swarm
//! service, a Kubernetes Deployment) is a sibling of `docker.rs` with the same operations.

pub mod docker;
pub mod lifecycle;

pub use docker::{DockerRuntime, connect};

use slipway_shared::domain::{FunctionLimits, PinnedImage};
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
}

/// A started instance: the container and the address the platform reaches it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub container_id: String,
    pub endpoint: String,
}
