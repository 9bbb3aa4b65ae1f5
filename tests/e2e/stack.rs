//! Slipway itself on the swarm: deploy/swarm/stack.yml with the image of scripts/image.sh
//! (`SLIPWAY_STACK_IMAGE`, which scripts/test.sh makes and pushes) on the 3-node cluster of
//! scripts/swarm.sh. The stack migrates an empty database, the image's CLI creates a key, a
//! function is deployed through the stack's api and invoked; then a deploy whose build is held by
//! one of the two workers (on two nodes) survives that worker being killed.
//!
//! The nodes reach this machine only at the lan's root-side address, where the test forwards
//! Postgres and S3; the registry is the one the swarm pulls from, and builds run on the dev
//! engine's BuildKit, whose socket the workers mount (see the stack's header for AWS).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use slipway_shared::{
    jobs::{BuildJob, Job},
    secrets::SecretsKey,
};
use slipway_tests::{
    ApiClient, TestDb, eventually, hello_archive, pack_dir, repo_root, required_env,
};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use uuid::Uuid;

use crate::swarm::{CLUSTER, manager};

/// A TCP forwarder from an address the nodes reach to a service of this machine's loopback.
struct Forward {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(listen: IpAddr, target: String) -> anyhow::Result<Forward> {
    let listener = TcpListener::bind((listen, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(Forward { addr, task })
}

fn node_host(node: &str) -> anyhow::Result<String> {
    required_env("SLIPWAY_SWARM_NODES")
        .split(' ')
        .find_map(|entry| entry.strip_prefix(&format!("{node}=")))
        .map(str::to_owned)
        .with_context(|| format!("{node} is not in SLIPWAY_SWARM_NODES"))
}

/// `docker` against one node's engine, with the dev client's registry login.
fn on_node(node: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("/usr/bin/docker")
        .arg("--config")
        .arg(required_env("SLIPWAY_DOCKER_CONFIG"))
        .arg("-H")
        .arg(node_host(node)?)
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!(
            "docker ({node}) {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn socket_path(docker_host: &str) -> anyhow::Result<String> {
    docker_host
        .strip_prefix("unix://")
        .map(str::to_owned)
        .with_context(|| format!("{docker_host} is not a unix socket"))
}

/// One stack on the cluster, with its secrets; removed on drop, whatever the test did.
struct Stack {
    name: String,
    secrets: Vec<String>,
    functions: Vec<Uuid>,
}

impl Stack {
    fn deploy(name: &str, variables: &BTreeMap<&str, String>) -> anyhow::Result<()> {
        let file = repo_root().join("deploy/swarm/stack.yml");
        let output = Command::new("/usr/bin/docker")
            // Only the variables given: the stack file must not pick up the test's own setting.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(variables)
            .arg("--config")
            .arg(required_env("SLIPWAY_DOCKER_CONFIG"))
            .arg("-H")
            .arg(required_env("SLIPWAY_SWARM_MANAGER"))
            .args(["stack", "deploy", "--with-registry-auth", "-c"])
            .arg(file)
            .arg(name)
            .output()?;
        if !output.status.success() {
            bail!(
                "docker stack deploy: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// What the service's tasks said, for a failure message.
    fn logs(&self, service: &str) -> String {
        manager(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}",
            &format!("{}_{service}", self.name),
        ])
        .unwrap_or_else(|e| format!("{e:#}"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = manager(&["stack", "rm", &self.name]);
        for function_id in &self.functions {
            if let Ok(listed) = manager(&[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=dev.slipway.function={function_id}"),
            ]) {
                for service in listed.lines() {
                    let _ = manager(&["service", "rm", service]);
                }
            }
        }
        // Secrets and overlays stay in use until the tasks on them are gone.
        let networks: Vec<String> = self
            .functions
            .iter()
            .map(|id| format!("slipway-fn-{}", id.simple()))
            .collect();
        let leftovers = || {
            (self.secrets.iter().map(|s| ("secret", s)))
                .chain(networks.iter().map(|n| ("network", n)))
                .filter(|(kind, name)| manager(&[kind, "rm", name]).is_err())
                .filter(|(kind, name)| manager(&[kind, "inspect", name]).is_ok())
                .count()
        };
        for _ in 0..60 {
            if leftovers() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn create_secret(name: &str, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/docker")
        .arg("-H")
        .arg(required_env("SLIPWAY_SWARM_MANAGER"))
        .args(["secret", "create", name, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(value.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("docker secret create {name}: {status}");
    }
    Ok(())
}

/// `(status, lease holder)` of the build job of a deployment.
async fn build_of(
    pool: &sqlx::PgPool,
    deployment: Uuid,
) -> anyhow::Result<(String, Option<String>)> {
    Ok(sqlx::query_as(
        "SELECT status, lock_by FROM apalis.jobs
         WHERE job_type = $1 AND convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $2",
    )
    .bind(BuildJob::NAME)
    .bind(deployment.to_string())
    .fetch_one(pool)
    .await?)
}

/// The node and task a queue lease names: `<SLIPWAY_WORKER_NAME>/<queue>`, the name being the
/// stack's `<node>.<task>`.
fn lease_holder(lock_by: &str) -> anyhow::Result<(String, String)> {
    let worker = lock_by
        .split_once('/')
        .map_or(lock_by, |(worker, _)| worker);
    let (node, task) = worker
        .split_once('.')
        .with_context(|| format!("{lock_by:?} is not <node>.<task>/<queue>"))?;
    Ok((node.to_owned(), task.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slipway_runs_on_the_swarm_from_its_own_image_and_a_killed_worker_loses_no_deploy()
-> anyhow::Result<()> {
    // Alone on the cluster: the stack's api and workers live on the worker nodes, which other
    // tests drain and stop.
    let _alone = CLUSTER.write().await;
    let image = required_env("SLIPWAY_STACK_IMAGE");
    let host_addr: IpAddr = required_env("SLIPWAY_SWARM_HOST_ADDR").parse()?;
    let registry = required_env("SLIPWAY_REGISTRY");

    let db = TestDb::create_empty().await?;
    let db_target = db
        .url
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(host, _)| host.to_owned())
        .context("host:port in DATABASE_URL")?;
    let postgres = forward(host_addr, db_target).await?;
    let s3_endpoint = required_env("SLIPWAY_TEST_S3_ENDPOINT");
    let s3 = forward(
        host_addr,
        s3_endpoint.trim_start_matches("http://").to_owned(),
    )
    .await?;
    let stack_db_url = db.url.replace(
        &db.url[db.url.rfind('@').context("@")? + 1..db.url.rfind('/').context("/")?],
        &postgres.addr.to_string(),
    );

    let id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let name = format!("slwe2e{id}");
    let prefix = format!("slwe2e{id}");
    let mut stack = Stack {
        name: name.clone(),
        secrets: vec![],
        functions: vec![],
    };
    let secrets_key = SecretsKey::generate()?.to_hex();
    for (secret, value) in [
        ("database-url", stack_db_url.clone()),
        ("secrets-key", secrets_key.clone()),
        (
            "registry-password",
            required_env("SLIPWAY_REGISTRY_PASSWORD"),
        ),
    ] {
        let secret_name = format!("{prefix}-{secret}");
        create_secret(&secret_name, &value)?;
        stack.secrets.push(secret_name);
    }
    // Host networking: a port of its own on the nodes, clear of the engine's ephemeral range.
    // The AWS profiles' directory the api and workers mount (empty here: S3 takes static keys).
    let aws_config_dir = tempfile::tempdir()?;
    let api_port = 18000 + (Uuid::new_v4().as_u128() % 2000) as u16;
    let variables = BTreeMap::from([
        ("SLIPWAY_IMAGE", image.clone()),
        ("SLIPWAY_SECRET_PREFIX", prefix),
        (
            "SLIPWAY_ARCHIVE_STORE",
            format!("s3://{}", required_env("SLIPWAY_TEST_S3_BUCKET")),
        ),
        ("SLIPWAY_S3_ENDPOINT", format!("http://{}", s3.addr)),
        ("AWS_REGION", required_env("AWS_REGION")),
        ("AWS_ACCESS_KEY_ID", required_env("AWS_ACCESS_KEY_ID")),
        (
            "AWS_SECRET_ACCESS_KEY",
            required_env("AWS_SECRET_ACCESS_KEY"),
        ),
        ("SLIPWAY_REGISTRY", registry.clone()),
        (
            "SLIPWAY_REGISTRY_USERNAME",
            required_env("SLIPWAY_REGISTRY_USERNAME"),
        ),
        ("SLIPWAY_INSECURE_REGISTRIES", registry.clone()),
        ("SLIPWAY_API_PORT", api_port.to_string()),
        // The local manager is drained of tasks (tests/e2e/swarm.rs): everything on the workers.
        ("SLIPWAY_API_NODE_ROLE", "worker".into()),
        ("SLIPWAY_WORKER_NODE_ROLE", "worker".into()),
        (
            "SLIPWAY_SWARM_MANAGER_SOCKET",
            socket_path(&required_env("SLIPWAY_SWARM_MANAGER"))?,
        ),
        (
            "SLIPWAY_BUILDER_SOCKET",
            socket_path(&required_env("SLIPWAY_DOCKER_HOST"))?,
        ),
        (
            "SLIPWAY_BUILD_BASE_IMAGES",
            format!("slipway/busybox:1,{registry}/slipway/busybox:1"),
        ),
        (
            "SLIPWAY_AWS_CONFIG_DIR",
            aws_config_dir.path().display().to_string(),
        ),
        ("SLIPWAY_LOG_FORMAT", "text".into()),
        ("RUST_LOG", "info".into()),
    ]);
    Stack::deploy(&name, &variables)?;

    // migrate: the stack's one-shot service applies every migration to the empty database.
    let migrations = std::fs::read_dir(repo_root().join("migrations"))?
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    eventually(
        Duration::from_secs(180),
        "the stack's migrations",
        || async {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&pool)
                    .await
                    .ok();
            Ok((applied == Some(migrations)).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs("migrate"))?;

    // create a key: the image's own CLI, on a node, against the stack's database.
    let issued = on_node(
        "worker1",
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "-e",
            &format!("DATABASE_URL={stack_db_url}"),
            "-e",
            &format!("SLIPWAY_SECRETS_KEY={secrets_key}"),
            &image,
            "slipway",
            "create-key",
            "stack-e2e",
        ],
    )?;
    let issued_value = |name: &str| {
        issued
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
            .with_context(|| format!("create-key printed no {name}: {issued}"))
    };
    let key = issued_value("SLIPWAY_API_KEY")?;
    let version = on_node(
        "worker1",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "slipway",
            "--version",
        ],
    )?;
    assert!(version.starts_with("slipway "), "{version}");
    let user = on_node(
        "worker1",
        &["image", "inspect", "--format", "{{.Config.User}}", &image],
    )?;
    assert_eq!(user.trim(), "10001:10001", "the image runs unprivileged");

    // The api runs on both worker nodes (global on role=worker); use worker1's.
    let api_addr = required_env("SLIPWAY_SWARM_ADDR_WORKER1");
    let api = ApiClient::new(&format!("http://{api_addr}:{api_port}"), &key)?.signing_with(
        &key,
        issued_value("SLIPWAY_KEY_ID")?.parse()?,
        &issued_value("SLIPWAY_SIGNING_SECRET")?,
    );
    eventually(Duration::from_secs(120), "the stack's api", || async {
        Ok(api.wait_healthy().await.ok())
    })
    .await
    .with_context(|| stack.logs("api"))?;

    // Two workers, on two nodes.
    let worker_nodes: BTreeSet<String> =
        eventually(Duration::from_secs(120), "two running workers", || async {
            let listed = manager(&[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
                &format!("{name}_worker"),
            ])?;
            let nodes: BTreeSet<String> = listed
                .lines()
                .filter(|line| line.contains("Running"))
                .filter_map(|line| line.split(' ').next().map(str::to_owned))
                .collect();
            Ok((nodes.len() == 2).then_some(nodes))
        })
        .await
        .with_context(|| stack.logs("worker"))?;
    assert_eq!(worker_nodes.len(), 2, "{worker_nodes:?}");

    // deploy through the stack's api, and invoke.
    let function_id = api.init("on-the-stack").await?;
    stack.functions.push(function_id);
    let (first, _) = api
        .deploy(function_id, hello_archive("served by the stack\n")?)
        .await?;
    api.wait_active(first)
        .await
        .with_context(|| stack.logs("worker"))?;
    // Through the api of each worker node: one of them may run on the function's own node,
    // the other reaches it across the lan.
    for node in ["WORKER1", "WORKER2"] {
        let addr = required_env(&format!("SLIPWAY_SWARM_ADDR_{node}"));
        let api = ApiClient::new(&format!("http://{addr}:{api_port}"), &key)?;
        assert_eq!(
            api.invoke(function_id, "/").await?,
            (200, "served by the stack\n".into()),
            "through the api on {node}"
        );
    }

    // A deploy whose build takes a while (content of its own, so BuildKit has nothing cached);
    // the worker that holds it is killed while the slow step runs.
    let survivor = format!("survived a worker ({id})\n");
    let slow = pack_dir(
        &repo_root().join("examples/hello"),
        &BTreeMap::from([
            ("www/index.html", survivor.as_str()),
            (
                "Dockerfile",
                "FROM slipway/busybox:1\nCOPY www /www\nRUN sleep 20\n\
                 ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox httpd -f -p \\\"$PORT\\\" -h /www\"]\n",
            ),
        ]),
    )?;
    let (second, _) = api.deploy(function_id, slow).await?;
    let holder = eventually(Duration::from_secs(60), "the slow step running", || async {
        let log = api
            .http
            .get(api.url(&format!("/api/deployments/{second}/logs")))
            .bearer_auth(&api.api_key)
            .send()
            .await?
            .text()
            .await?;
        if !log.contains("RUN sleep 20") {
            return Ok(None);
        }
        let (status, worker) = build_of(&pool, second).await?;
        Ok(worker.filter(|_| status == "Running"))
    })
    .await?;
    let (holder_node, holder_task) = lease_holder(&holder)?;
    let node = ["worker1", "worker2"]
        .into_iter()
        .find(|node| {
            on_node(node, &["info", "--format", "{{.Name}}"])
                .is_ok_and(|name| name.trim() == holder_node)
        })
        .with_context(|| format!("no node is named {holder_node}"))?;
    let container = on_node(
        node,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.task.name={holder_task}"),
        ],
    )?;
    let container = container.trim();
    assert!(
        !container.is_empty(),
        "{holder_task} runs no container on {node}"
    );
    on_node(node, &["kill", container])?;
    let killed_at = std::time::Instant::now();

    // The peer (or the worker the swarm restarts) takes the orphaned build over.
    let settled = api
        .wait_settled(second, Duration::from_secs(300))
        .await
        .with_context(|| stack.logs("worker"))?;
    assert_eq!(settled["status"], "active", "{settled}");
    eprintln!(
        "stack: killed {holder_task} on {node} mid-build; the deploy was active {:.1}s later",
        killed_at.elapsed().as_secs_f64()
    );
    assert_eq!(api.invoke(function_id, "/").await?, (200, survivor.clone()));
    // Done once, by another worker than the one killed while it held it.
    let (status, finished_by) = build_of(&pool, second).await?;
    assert_eq!(status, "Done");
    let finished_by = finished_by.context("a finished job names its worker")?;
    assert_ne!(
        finished_by, holder,
        "the killed worker cannot have finished the build"
    );
    eprintln!("stack: the build held by {holder} was finished by {finished_by}");
    pool.close().await;
    drop(stack);
    drop((postgres, s3));
    Ok(())
}
