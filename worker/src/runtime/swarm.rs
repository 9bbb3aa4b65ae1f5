//! The Swarm driver: every instance is a swarm service of one replica, pinned to
//! `repository@sha256:…`, on an overlay network of its own function. The engine places the task;
//! Slipway never names a node.
//!
//! The path from the platform to a task is explicit, because neither service VIPs nor the
//! routing mesh may exist (no IPVS on these machines, and a VIP would answer for whatever task
//! the engine picks). The service publishes the function's port in `host` mode with a port the
//! engine chooses, so a task is reached at `<its node's address>:<its published port>`, an
//! address only that task answers on. The node's firewall (scripts/lib/function-firewall.sh,
//! applied by scripts/swarm.sh) admits those connections from the platform alone and keeps
//! every task from opening anything: not the node, not another tenant's task on the shared
//! `docker_gwbridge`, not the platform. The design needs nothing a cluster with IPVS would
//! lack. A task that moves (its node died) has a new endpoint; [`SwarmRuntime::observe`] is how
//! the worker follows it.
//!
//! Scale to zero is the service kept at 0 replicas; waking scales it back to 1.

use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker,
    auth::DockerCredentials,
    models::{
        EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
        EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType,
        NetworkAttachmentConfig, NetworkCreateRequest, NodeState, ServiceSpec, ServiceSpecMode,
        ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecResources,
        TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
    },
    query_parameters::{
        InspectServiceOptions, ListServicesOptions, ListTasksOptions, LogsOptions,
        UpdateServiceOptions,
    },
};
use futures::StreamExt;
use slipway_shared::domain::PinnedImage;
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    DEPLOYMENT_LABEL, DockerRuntime, FUNCTION_LABEL, FUNCTION_PORT, Instance, InstanceSpec,
    RuntimeError, docker::network_name, not_found,
};

/// How often the driver asks the manager while it waits for a task.
const POLL: Duration = Duration::from_millis(200);

/// What the engine says of the one task a service should be running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A task runs and is reached at this endpoint.
    Running { task_id: String, endpoint: String },
    /// The engine is (re)placing the task: the reason is the engine's own words.
    Starting { reason: String },
    /// No node can take the task (resources, constraints): the engine's reason.
    Unplaceable { reason: String },
    /// The task exited or was refused and the engine gave up or is retrying.
    Failed { reason: String },
    /// Scaled to zero: nothing should run.
    Idle,
    /// No such service.
    Gone,
}

#[derive(Clone)]
pub struct SwarmRuntime {
    manager: Docker,
    /// The engine that builds: it knows the images' configs (their user) without another pull.
    builder: DockerRuntime,
    placement_timeout: Duration,
}

impl SwarmRuntime {
    pub fn new(manager: Docker, builder: DockerRuntime, placement_timeout: Duration) -> Self {
        Self {
            manager,
            builder,
            placement_timeout,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        self.builder.http()
    }

    pub fn builder(&self) -> &DockerRuntime {
        &self.builder
    }

    /// The function's overlay, made on its first instance.
    async fn ensure_network(&self, function_id: Uuid) -> Result<String, RuntimeError> {
        let request = NetworkCreateRequest {
            name: network_name(function_id),
            driver: Some("overlay".into()),
            // Only services join it; no container started by hand can.
            attachable: Some(false),
            labels: Some(HashMap::from([(
                FUNCTION_LABEL.to_owned(),
                function_id.to_string(),
            )])),
            ..Default::default()
        };
        super::ensure_network(&self.manager, request).await
    }

    pub async fn remove_network(&self, function_id: Uuid) -> Result<(), RuntimeError> {
        super::remove_network(&self.manager, function_id).await
    }

    fn service_spec(
        spec: &InstanceSpec<'_>,
        network: String,
        user: String,
        replicas: i64,
    ) -> ServiceSpec {
        let labels = HashMap::from([
            (FUNCTION_LABEL.to_owned(), spec.function_id.to_string()),
            (DEPLOYMENT_LABEL.to_owned(), spec.deployment_id.to_string()),
        ]);
        let mut env = spec.env.clone();
        env.push(format!("PORT={FUNCTION_PORT}"));
        let limits = spec.limits;
        let seconds = |s: u64| Some(Duration::from_secs(s).as_nanos() as i64);
        ServiceSpec {
            name: Some(spec.name.clone()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(spec.image.to_string()),
                    labels: Some(labels),
                    env: Some(env),
                    user: Some(user),
                    init: Some(true),
                    capability_drop: Some(vec!["ALL".into()]),
                    read_only: Some(spec.read_only_root),
                    mounts: spec.read_only_root.then(|| {
                        vec![Mount {
                            target: Some("/tmp".into()),
                            typ: Some(MountType::TMPFS),
                            tmpfs_options: Some(MountTmpfsOptions {
                                size_bytes: Some(64 << 20),
                                mode: Some(0o1777),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]
                    }),
                    stop_grace_period: seconds(5),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some(limits.nano_cpus()),
                        memory_bytes: Some(limits.memory_bytes()),
                        pids: Some(i64::from(limits.pids)),
                    }),
                    // Swap limits are newer than API 1.41; its engines take the default.
                    ..Default::default()
                }),
                // A function that exits is started again, as Cloud Run and Knative do; the
                // delay keeps a crashing one from spinning.
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: seconds(1),
                    max_attempts: None,
                    window: None,
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(network),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                // No VIP: nothing but the published port leads to a task.
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(FUNCTION_PORT)),
                    // The engine picks a free port on whichever node it places the task.
                    published_port: None,
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }
    }

    /// Creates the deployment's service (or scales a kept one back to 1: a wake) and waits
    /// until the engine runs its task; returns the service and the task's endpoint.
    pub async fn start(
        &self,
        spec: &InstanceSpec<'_>,
        kept: Option<&str>,
    ) -> Result<Instance, RuntimeError> {
        let credentials = spec
            .registry_auth
            .clone()
            .map(crate::registry::engine_credentials);
        if let Some(service) = kept
            && let Some(instance) = self.scale(service, 1, credentials.clone()).await?
        {
            return Ok(instance);
        }
        let network = self.ensure_network(spec.function_id).await?;
        let user = self
            .builder
            .user_for_pulling(spec.image, credentials.clone())
            .await?;
        let service_spec = Self::service_spec(spec, network, user, 1);
        let created = match self
            .manager
            .create_service(service_spec.clone(), credentials.clone())
            .await
        {
            Ok(created) => created,
            // A previous run of this job died after creating it: start over.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                self.remove(&spec.name).await?;
                self.manager
                    .create_service(service_spec, credentials)
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        let service = created.id.ok_or_else(|| {
            RuntimeError::Unavailable("the manager returned no service id".into())
        })?;
        match self.wait_for_task(&service, None).await {
            Ok(endpoint) => Ok(Instance {
                container_id: service,
                endpoint,
            }),
            Err(e) => {
                self.remove(&service).await.ok();
                Err(e)
            }
        }
    }

    /// Sets the service's replicas; with 1, waits for the task and returns it. `None` when the
    /// service is gone.
    async fn scale(
        &self,
        service: &str,
        replicas: i64,
        credentials: Option<DockerCredentials>,
    ) -> Result<Option<Instance>, RuntimeError> {
        let inspected = match self
            .manager
            .inspect_service(service, None::<InspectServiceOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut spec = inspected.spec.unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        });
        self.update(service, &inspected.version, spec, credentials)
            .await?;
        if replicas == 0 {
            return Ok(None);
        }
        let endpoint = self.wait_for_task(service, None).await?;
        Ok(Some(Instance {
            container_id: service.to_owned(),
            endpoint,
        }))
    }

    async fn update(
        &self,
        service: &str,
        version: &Option<bollard::models::ObjectVersion>,
        spec: ServiceSpec,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        let version = version.as_ref().and_then(|v| v.index).ok_or_else(|| {
            RuntimeError::Unavailable(format!("service {service} has no version"))
        })?;
        let options = UpdateServiceOptions {
            version: version as i32,
            ..Default::default()
        };
        self.manager
            .update_service(service, spec, options, credentials)
            .await?;
        Ok(())
    }

    /// Waits until a task of `service` other than `not` runs; its endpoint. A task the engine
    /// cannot place, or that keeps failing, is the function's problem, told in the engine's
    /// words.
    async fn wait_for_task(
        &self,
        service: &str,
        not: Option<&str>,
    ) -> Result<String, RuntimeError> {
        let started = Instant::now();
        loop {
            let observed = self.observe(service).await?;
            match &observed {
                Observed::Running { task_id, endpoint } if Some(task_id.as_str()) != not => {
                    return Ok(endpoint.clone());
                }
                Observed::Gone => {
                    return Err(RuntimeError::Unavailable(format!(
                        "service {service} vanished while it started"
                    )));
                }
                _ => {}
            }
            if started.elapsed() > self.placement_timeout {
                let why = match observed {
                    Observed::Unplaceable { reason } => {
                        format!("the engine could not place the task: {reason}")
                    }
                    Observed::Failed { reason } => format!("the task failed: {reason}"),
                    Observed::Starting { reason } => format!("the task did not start: {reason}"),
                    _ => "the task did not start".into(),
                };
                return Err(RuntimeError::Function(format!(
                    "{why} (within {:?})",
                    self.placement_timeout
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Where the service's task stands, as the manager sees it.
    pub async fn observe(&self, service: &str) -> Result<Observed, RuntimeError> {
        let inspected = match self
            .manager
            .inspect_service(service, None::<InspectServiceOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(e) if not_found(&e) => return Ok(Observed::Gone),
            Err(e) => return Err(e.into()),
        };
        let replicas = inspected
            .spec
            .and_then(|s| s.mode)
            .and_then(|m| m.replicated)
            .and_then(|r| r.replicas)
            .unwrap_or(1);
        if replicas == 0 {
            return Ok(Observed::Idle);
        }
        let service_id = inspected.id.unwrap_or_else(|| service.to_owned());
        let options = ListTasksOptions {
            filters: Some(HashMap::from([(
                "service".to_owned(),
                vec![service_id.clone()],
            )])),
        };
        let mut tasks = self.manager.list_tasks(Some(options)).await?;
        // A task id prefix of another service's id would match the filter too.
        tasks.retain(|t| t.service_id.as_deref() == Some(service_id.as_str()));
        tasks.sort_by_key(|t| std::cmp::Reverse(t.created_at));
        self.judge(&tasks).await
    }

    async fn judge(&self, tasks: &[Task]) -> Result<Observed, RuntimeError> {
        let wanted = |t: &&Task| t.desired_state == Some(TaskState::RUNNING);
        let state = |t: &Task| t.status.as_ref().and_then(|s| s.state);
        let words = |t: &Task| {
            let status = t.status.clone().unwrap_or_default();
            match (status.err.filter(|e| !e.is_empty()), status.message) {
                (Some(err), _) => err,
                (None, Some(message)) => message,
                (None, None) => "no status yet".into(),
            }
        };
        for task in tasks.iter().filter(wanted) {
            if state(task) != Some(TaskState::RUNNING) {
                continue;
            }
            if let Some(endpoint) = self.endpoint_of(task).await? {
                return Ok(Observed::Running {
                    task_id: task.id.clone().unwrap_or_default(),
                    endpoint,
                });
            }
        }
        if let Some(task) = tasks.iter().find(wanted) {
            let reason = words(task);
            if state(task) == Some(TaskState::PENDING) && reason.contains("no suitable node") {
                return Ok(Observed::Unplaceable { reason });
            }
            return Ok(Observed::Starting {
                reason: format!(
                    "task {} {}",
                    state(task).map_or("new".to_owned(), |s| s.to_string()),
                    reason
                ),
            });
        }
        // Nothing wanted running: the last task ended and the next is not made yet.
        match tasks.first() {
            Some(task) if matches!(state(task), Some(TaskState::FAILED | TaskState::REJECTED)) => {
                Ok(Observed::Failed {
                    reason: words(task),
                })
            }
            Some(task) => Ok(Observed::Starting {
                reason: words(task),
            }),
            None => Ok(Observed::Starting {
                reason: "no task yet".into(),
            }),
        }
    }

    /// `node address:published port` of a running task, once the engine reports the port and
    /// the node is up.
    async fn endpoint_of(&self, task: &Task) -> Result<Option<String>, RuntimeError> {
        let port = task
            .status
            .as_ref()
            .and_then(|s| s.port_status.as_ref())
            .and_then(|p| p.ports.as_ref())
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.target_port == Some(i64::from(FUNCTION_PORT)))
                    .and_then(|p| p.published_port)
            });
        let (Some(port), Some(node_id)) = (port, task.node_id.as_deref()) else {
            return Ok(None);
        };
        let node = match self.manager.inspect_node(node_id).await {
            Ok(node) => node,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let status = node.status.unwrap_or_default();
        // A task on a node the manager lost touch with may be gone already: not an endpoint.
        if status.state != Some(NodeState::READY) {
            return Ok(None);
        }
        Ok(status.addr.map(|addr| format!("{addr}:{port}")))
    }

    /// Waits until the instance answers HTTP; fails early if its task stops running.
    pub async fn wait_until_answering(
        &self,
        instance: &Instance,
        timeout: Duration,
    ) -> Result<Duration, RuntimeError> {
        let started = Instant::now();
        let url = format!("http://{}/", instance.endpoint);
        loop {
            if self.http().get(&url).send().await.is_ok() {
                return Ok(started.elapsed());
            }
            match self.observe(&instance.container_id).await? {
                Observed::Running { endpoint, .. } if endpoint == instance.endpoint => {}
                other => {
                    let logs = self.logs_tail(&instance.container_id).await;
                    return Err(RuntimeError::Function(format!(
                        "the task stopped before answering on $PORT ({other:?}); last output:\n{logs}"
                    )));
                }
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

    pub async fn logs_tail(&self, service: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "50".into(),
            ..Default::default()
        };
        let mut stream = self.manager.service_logs(service, Some(options));
        let mut out = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
            out.push_str(&chunk.to_string());
        }
        out
    }

    /// A fresh task of the same service (`service update --force`): the engine stops the old
    /// one and places a new one, perhaps elsewhere.
    pub async fn restart(&self, instance: &Instance) -> Result<Instance, RuntimeError> {
        let service = &instance.container_id;
        let before = match self.observe(service).await? {
            Observed::Running { task_id, .. } => Some(task_id),
            _ => None,
        };
        let inspected = self
            .manager
            .inspect_service(service, None::<InspectServiceOptions>)
            .await?;
        let mut spec = inspected.spec.unwrap_or_default();
        if let Some(template) = spec.task_template.as_mut() {
            template.force_update = Some(template.force_update.unwrap_or(0) + 1);
        }
        self.update(service, &inspected.version, spec, None).await?;
        let endpoint = self.wait_for_task(service, before.as_deref()).await?;
        Ok(Instance {
            container_id: service.clone(),
            endpoint,
        })
    }

    /// Scale to zero: the service stays, with its spec, for the wake.
    pub async fn suspend(&self, service: &str) -> Result<(), RuntimeError> {
        self.scale(service, 0, None).await.map(|_| ())
    }

    /// Removes the service (its task stops); one already gone is fine.
    pub async fn remove(&self, service: &str) -> Result<(), RuntimeError> {
        match self.manager.delete_service(service).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every service labelled with the function.
    /// Every service labelled as a function's, with its labels and age.
    pub async fn labelled_services(&self) -> Result<Vec<super::LabelledInstance>, RuntimeError> {
        let options = ListServicesOptions {
            filters: Some(super::any_function_label()),
            ..Default::default()
        };
        let services = self.manager.list_services(Some(options)).await?;
        Ok(services
            .into_iter()
            .filter_map(|s| {
                let labels = s.spec.as_ref().and_then(|spec| spec.labels.as_ref());
                Some(super::LabelledInstance {
                    function_id: super::label_id(labels, FUNCTION_LABEL),
                    deployment_id: super::label_id(labels, DEPLOYMENT_LABEL),
                    created: s.created_at,
                    id: s.id?,
                })
            })
            .collect())
    }

    pub(super) fn manager(&self) -> &Docker {
        &self.manager
    }

    pub async fn services_of(&self, function_id: Uuid) -> Result<Vec<String>, RuntimeError> {
        let options = ListServicesOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{FUNCTION_LABEL}={function_id}")],
            )])),
            ..Default::default()
        };
        let services = self.manager.list_services(Some(options)).await?;
        Ok(services.into_iter().filter_map(|s| s.id).collect())
    }
}

impl DockerRuntime {
    /// The image's user (see `user_for`), pulling it into this engine first if it is not there:
    /// an image built long ago may have been dropped since.
    pub async fn user_for_pulling(
        &self,
        image: &PinnedImage,
        credentials: Option<DockerCredentials>,
    ) -> Result<String, RuntimeError> {
        let reference = image.to_string();
        match self.user_for(&reference).await {
            Err(RuntimeError::Function(_)) => {
                self.pull_reference(image, credentials).await?;
                self.user_for(&reference).await
            }
            other => other,
        }
    }
}
