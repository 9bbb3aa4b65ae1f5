//! Functions on the 3-node Docker Swarm of `scripts/swarm.sh` (`SLIPWAY_RUNTIME=swarm`): the
//! whole life of a function (deploy, invoke, redeploy, rollback, idle at 0 replicas, wake), the
//! isolation probe, and a node that stops or is cut off while its task serves. The manager is
//! drained of tasks, as operators run managers, so a node fault never takes the manager away.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use slipway_shared::jobs::{Job, PurgeJob};
use slipway_tests::{
    StackOptions, TestStack, eventually, hello_archive, pack_dir, repo_root, required_env,
};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

/// One node fault at a time: with both workers down nothing could be placed.
static NODE_FAULTS: Mutex<()> = Mutex::const_new(());
/// Every test shares the cluster, except the one that leaves no node to place tasks on.
pub(crate) static CLUSTER: RwLock<()> = RwLock::const_new(());

const NODES: [&str; 3] = ["manager", "worker1", "worker2"];

pub(crate) fn manager(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .arg("-H")
        .arg(required_env("SLIPWAY_SWARM_MANAGER"))
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!(
            "docker (manager) {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `docker node update`, again while the manager answers "update out of sequence": the node's
/// own status reports bump its version between our read and our write.
fn update_node(args: &[&str]) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let mut command = vec!["node", "update"];
        command.extend_from_slice(args);
        match manager(&command) {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 20 && format!("{e:#}").contains("out of sequence") => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

fn swarm_script(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(repo_root().join("scripts/swarm.sh"))
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("scripts/swarm.sh {args:?}: {status}");
    }
    Ok(())
}

/// The node whose address `endpoint` is on.
fn node_of(endpoint: &str) -> anyhow::Result<&'static str> {
    let address = endpoint.rsplit_once(':').context("host:port")?.0;
    NODES
        .into_iter()
        .find(|node| {
            std::env::var(format!("SLIPWAY_SWARM_ADDR_{}", node.to_uppercase())).as_deref()
                == Ok(address)
        })
        .with_context(|| format!("{endpoint} is on no node of the swarm"))
}

/// Drains the manager once per run: concurrent node updates conflict ("update out of
/// sequence").
static MANAGER_DRAINED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn swarm_stack() -> anyhow::Result<TestStack> {
    MANAGER_DRAINED
        .get_or_try_init(|| async {
            let name = manager(&["info", "--format", "{{.Name}}"])?;
            let availability = manager(&[
                "node",
                "inspect",
                name.trim(),
                "--format",
                "{{.Spec.Availability}}",
            ])?;
            if availability.trim() != "drain" {
                update_node(&["--availability", "drain", name.trim()])?;
            }
            anyhow::Ok(())
        })
        .await?;
    TestStack::start_with(StackOptions::swarm()).await
}

async fn endpoint_of(stack: &TestStack, function_id: Uuid) -> anyhow::Result<String> {
    let endpoint: Option<String> = sqlx::query_scalar(
        "SELECT runtime_endpoint FROM deployments WHERE function_id = $1 AND is_active",
    )
    .bind(function_id)
    .fetch_one(&stack.pool)
    .await?;
    endpoint.context("the active deployment has no endpoint")
}

/// `(name, replicas, image)` of the function's services on the manager.
fn services_of(function_id: Uuid) -> anyhow::Result<Vec<(String, String, String)>> {
    let listed = manager(&[
        "service",
        "ls",
        "--filter",
        &format!("label=dev.slipway.function={function_id}"),
        "--format",
        "{{.Name}} {{.Replicas}} {{.Image}}",
    ])?;
    Ok(listed
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            Some((
                fields.next()?.to_owned(),
                fields.next()?.to_owned(),
                fields.next()?.to_owned(),
            ))
        })
        .collect())
}

/// Rolls back to `version` and waits until it serves again.
async fn rollback(stack: &TestStack, function_id: Uuid, version: i64) -> anyhow::Result<()> {
    let response = stack
        .post(&format!("/api/functions/{function_id}/rollback"))
        .json(&json!({ "version": version }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if status != 202 {
        bail!("rollback answered {status}: {body}");
    }
    eventually(Duration::from_secs(60), "the rollback serving", || async {
        let active: Option<i32> = sqlx::query_scalar(
            "SELECT version FROM deployments WHERE function_id = $1 AND is_active",
        )
        .bind(function_id)
        .fetch_optional(&stack.pool)
        .await?;
        let function = stack.function(function_id).await?;
        Ok((active == Some(version as i32) && function["state"] == "Active").then_some(()))
    })
    .await
}

async fn fire_idle_sweep(stack: &TestStack) -> anyhow::Result<()> {
    let idle = slipway_shared::config::SchedulerConfig {
        cron_idle: "0 * * * * *".into(),
        ..Default::default()
    };
    slipway_shared::schedule::fire(
        &stack.pool,
        &idle,
        slipway_shared::schedule::Sweep::Idle,
        chrono::Utc::now() + chrono::TimeDelta::minutes(16),
        "test",
        true,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_lives_its_whole_life_on_the_swarm() -> anyhow::Result<()> {
    let _shared = CLUSTER.read().await;
    let stack = swarm_stack().await?;
    let function_id = stack.init("swarmed").await?;

    let (v1, _) = stack.deploy(function_id, hello_archive("one\n")?).await?;
    stack.wait_active(v1).await?;
    assert_eq!(stack.invoke(function_id, "").await?, (200, "one\n".into()));
    let endpoint = endpoint_of(&stack, function_id).await?;
    let node = node_of(&endpoint)?;
    assert_ne!(node, "manager", "the drained manager runs no task");
    let services = services_of(function_id)?;
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(services[0].1, "1/1");
    assert!(
        services[0].2.contains("@sha256:"),
        "the service runs the pinned digest: {services:?}"
    );
    // The engine refuses nothing the one-engine driver grants: no root, no capabilities.
    let spec = manager(&[
        "service",
        "inspect",
        &services[0].0,
        "--format",
        "{{json .Spec.TaskTemplate}}",
    ])?;
    let spec: Value = serde_json::from_str(&spec)?;
    let container = &spec["ContainerSpec"];
    assert_eq!(container["Init"], true, "{spec}");
    assert_eq!(container["CapabilityDrop"], json!(["ALL"]), "{spec}");
    assert_eq!(container["User"], "65534:65534", "{spec}");
    assert!(spec["Resources"]["Limits"]["MemoryBytes"].as_i64() > Some(0));
    assert!(spec["Resources"]["Limits"]["Pids"].as_i64() > Some(0));

    // A redeploy: the new service serves before the old one goes.
    let (v2, _) = stack.deploy(function_id, hello_archive("two\n")?).await?;
    stack.wait_active(v2).await?;
    assert_eq!(stack.invoke(function_id, "").await?, (200, "two\n".into()));
    eventually(Duration::from_secs(30), "v1's service removed", || async {
        Ok((services_of(function_id)?.len() == 1).then_some(()))
    })
    .await?;

    rollback(&stack, function_id, 1).await?;
    assert_eq!(stack.invoke(function_id, "").await?, (200, "one\n".into()));

    // Idle: Inactive at 0 replicas, the service kept; the next invocation wakes it to 1.
    fire_idle_sweep(&stack).await?;
    eventually(
        Duration::from_secs(30),
        "Inactive at 0 replicas",
        || async {
            let function = stack.function(function_id).await?;
            let services = services_of(function_id)?;
            Ok(
                (function["state"] == "Inactive" && services.len() == 1 && services[0].1 == "0/0")
                    .then_some(()),
            )
        },
    )
    .await?;
    let woken = Instant::now();
    assert_eq!(stack.invoke(function_id, "").await?, (200, "one\n".into()));
    eprintln!(
        "swarm cold wake (0 → 1 replica → first answer): {:?}",
        woken.elapsed()
    );
    assert_eq!(services_of(function_id)?[0].1, "1/1");
    assert_eq!(stack.function(function_id).await?["state"], "Active");

    // A purge removes the service and the function's overlay.
    let deleted = stack
        .delete(&format!("/api/functions/{function_id}"))
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    {
        let mut conn = stack.conn().await?;
        PurgeJob::Function {
            function_id,
            request_id: Uuid::new_v4(),
        }
        .enqueue(&mut conn)
        .await?;
    }
    let overlay = format!("slipway-fn-{}", function_id.simple());
    eventually(
        Duration::from_secs(60),
        "service and overlay purged",
        || async {
            let networks = manager(&["network", "ls", "--format", "{{.Name}}"])?;
            Ok(
                (services_of(function_id)?.is_empty() && !networks.lines().any(|n| n == overlay))
                    .then_some(()),
            )
        },
    )
    .await?;
    stack.shutdown().await
}

/// One invocation's outcome, as the caller saw it.
struct Answer {
    at: Instant,
    /// 0 when the request itself failed.
    status: u16,
    body: String,
    retry_after: bool,
}

/// A background caller that invokes the function every 100 ms and keeps every answer.
struct Caller {
    answers: Arc<std::sync::Mutex<Vec<Answer>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Caller {
    fn start(stack: &TestStack, function_id: Uuid) -> Self {
        let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let http = stack.http.clone();
        let url = stack.url(&format!("/api/v1/functions/invoke/{function_id}"));
        let key = stack.api_key.clone();
        let kept = Arc::clone(&answers);
        let task = tokio::spawn(async move {
            while !*stopped.borrow() {
                let sent = http
                    .get(&url)
                    .header("authorization", format!("Bearer {key}"))
                    .timeout(Duration::from_secs(90))
                    .send()
                    .await;
                let answer = match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response.headers().contains_key("retry-after");
                        let body = response.text().await.unwrap_or_default();
                        Answer {
                            at: Instant::now(),
                            status,
                            body,
                            retry_after,
                        }
                    }
                    Err(e) => Answer {
                        at: Instant::now(),
                        status: 0,
                        body: e.to_string(),
                        retry_after: false,
                    },
                };
                kept.lock().unwrap().push(answer);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        Self {
            answers,
            stop,
            task,
        }
    }

    async fn finish(self) -> Vec<Answer> {
        self.stop.send(true).ok();
        self.task.await.ok();
        Arc::try_unwrap(self.answers)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// Takes the node that runs the function's task away with `fault`, checks that invocations
/// meanwhile either wait or get a 503 with `Retry-After` (never another 5xx, never an answer
/// from elsewhere), that the function comes back on another node, and gives the node back
/// with `repair`. Returns the time from the fault to the first answer from the new node.
async fn survives(fault: &str, repair: &str) -> anyhow::Result<Duration> {
    let _shared = CLUSTER.read().await;
    let _one_at_a_time = NODE_FAULTS.lock().await;
    let stack = swarm_stack().await?;
    let function_id = stack.init(&format!("survivor-{fault}")).await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("still here\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let before = endpoint_of(&stack, function_id).await?;
    let node = node_of(&before)?;

    let caller = Caller::start(&stack, function_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cut_at = Instant::now();
    let outcome = async {
        // Inside: a fault command that fails half-way is still repaired below.
        swarm_script(&[fault, node])?;
        let moved = eventually(
            Duration::from_secs(120),
            "the function answering from another node",
            || async {
                let now = endpoint_of(&stack, function_id).await?;
                let function = stack.function(function_id).await?;
                Ok((now != before && function["state"] == "Active").then_some(now))
            },
        )
        .await?;
        let moved_at = Instant::now();
        assert_ne!(node_of(&moved)?, node);
        eventually(
            Duration::from_secs(30),
            "an answer after the move",
            || async {
                let answers = caller.answers.lock().unwrap();
                Ok(answers
                    .iter()
                    .rev()
                    .find(|a| a.at > moved_at && a.status == 200)
                    .map(|_| ()))
            },
        )
        .await?;
        anyhow::Ok(moved_at)
    }
    .await;
    let answers = caller.finish().await;
    // The node comes back whatever happened, for the tests after this one.
    swarm_script(&[repair, node])?;
    let moved_at = outcome?;

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for answer in &answers {
        *statuses.entry(answer.status).or_default() += 1;
        let body = &answer.body;
        match answer.status {
            200 => assert_eq!(body, "still here\n"),
            503 => assert!(answer.retry_after, "a 503 says when to retry: {body}"),
            other => bail!("an invocation during the {fault} got {other}: {body}"),
        }
    }
    let recovered = moved_at.duration_since(cut_at);
    eprintln!(
        "swarm {fault} of {node}: answers {statuses:?}; Active on another node {recovered:?} after the fault"
    );
    stack.shutdown().await?;
    Ok(recovered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_node_stops_comes_back_on_another_node() -> anyhow::Result<()> {
    survives("stop-node", "start-node").await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_node_is_cut_off_comes_back_on_another_node() -> anyhow::Result<()> {
    survives("cut-node", "heal-node").await.map(|_| ())
}

/// Whether a TCP connection to `target` opens from inside a node's namespace: the platform's
/// side of the same path, so a closed path from a task is the firewall's doing.
fn reachable_from_root(target: &str) -> anyhow::Result<bool> {
    let (host, port) = target.rsplit_once(':').context("host:port")?;
    let status = Command::new("timeout")
        .args([
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{host}/{port}"),
        ])
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_on_the_swarm_reaches_nothing_but_itself() -> anyhow::Result<()> {
    let _shared = CLUSTER.read().await;
    let stack = swarm_stack().await?;
    let neighbour = swarm_stack().await?;
    let victim = neighbour.init("swarm-victim").await?;
    let (deployment, _) = neighbour
        .deploy(victim, hello_archive("private\n")?)
        .await?;
    neighbour.wait_active(deployment).await?;
    let victim_endpoint = endpoint_of(&neighbour, victim).await?;
    assert!(
        reachable_from_root(&victim_endpoint)?,
        "the platform reaches the victim: no control"
    );

    let probe = stack.init("swarm-probe").await?;
    let archive = pack_dir(&repo_root().join("tests/functions/probe"), &BTreeMap::new())?;
    let (deployment, _) = stack.deploy(probe, archive).await?;
    stack.wait_active(deployment).await?;

    let host_listener = std::net::TcpListener::bind("0.0.0.0:0")?;
    let platform = required_env("SLIPWAY_SWARM_HOST_ADDR");
    let listener = format!("{platform}:{}", host_listener.local_addr()?.port());
    assert!(reachable_from_root(&listener)?, "no control for {listener}");
    let mut targets = vec![
        listener,
        required_env("SLIPWAY_REGISTRY"),
        victim_endpoint.clone(),
    ];
    for node in NODES {
        let address = required_env(&format!("SLIPWAY_SWARM_ADDR_{}", node.to_uppercase()));
        // The swarm's control plane and gossip: a task that reaches them could join the swarm.
        targets.push(format!("{address}:2377"));
        targets.push(format!("{address}:7946"));
    }
    let (status, body) = stack
        .invoke(probe, &format!("/cgi-bin/reach?{}", targets.join(",")))
        .await?;
    assert_eq!(status, 200, "{body}");
    let open: Vec<&str> = body
        .lines()
        .filter(|line| line.ends_with(" reached"))
        .collect();
    assert_eq!(
        body.lines().count(),
        targets.len(),
        "one answer per target: {body}"
    );
    assert!(open.is_empty(), "the probe on the swarm reached {open:?}");

    let (status, body) = stack.invoke(probe, "/cgi-bin/whoami").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("uid=65534"), "{body}");
    assert!(body.contains("capeff=0000000000000000"), "{body}");

    neighbour.shutdown().await?;
    stack.shutdown().await
}

/// Sets both workers' availability (`drain` or `active`).
fn workers(availability: &str) -> anyhow::Result<()> {
    for node in ["worker1", "worker2"] {
        let name = Command::new("docker")
            .arg("-H")
            .arg(
                std::env::var("SLIPWAY_SWARM_NODES")?
                    .split(' ')
                    .find_map(|entry| entry.strip_prefix(&format!("{node}=")))
                    .context("the node's docker host")?,
            )
            .args(["info", "--format", "{{.Name}}"])
            .output()?;
        let name = String::from_utf8(name.stdout)?;
        update_node(&["--availability", availability, name.trim()])?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_no_node_can_take_is_failed_with_the_engines_words_until_one_can()
-> anyhow::Result<()> {
    let _alone = CLUSTER.write().await;
    let stack = swarm_stack().await?;
    let function_id = stack.init("homeless").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("placed\n")?)
        .await?;
    stack.wait_active(deployment).await?;

    let outcome = async {
        // Inside: the workers come back whatever fails from here on.
        workers("drain")?;
        let failed = eventually(Duration::from_secs(60), "Failed, unschedulable", || async {
            let function = stack.function(function_id).await?;
            Ok((function["state"] == "Failed").then_some(function))
        })
        .await?;
        let reason = failed["state_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            reason.starts_with("unschedulable: ") && reason.contains("no suitable node"),
            "the engine's reason: {failed}"
        );
        let (status, body) = stack.invoke(function_id, "").await?;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("function_failed"), "{body}");

        // A first deploy that no node can take fails with the engine's words.
        let nowhere = stack.init("nowhere").await?;
        let (first, _) = stack
            .deploy(nowhere, hello_archive("never placed\n")?)
            .await?;
        let settled = stack.wait_settled(first, Duration::from_secs(120)).await?;
        assert_eq!(settled["status"], "failed", "{settled}");
        assert!(
            settled["error"]
                .as_str()
                .is_some_and(|e| e.contains("no suitable node")),
            "{settled}"
        );
        assert!(
            services_of(nowhere)?.is_empty(),
            "the unplaced service is removed"
        );
        anyhow::Ok(())
    }
    .await;
    workers("active")?;
    outcome?;

    // A node to place it on again: Active, answering.
    eventually(Duration::from_secs(60), "Active again", || async {
        let function = stack.function(function_id).await?;
        Ok((function["state"] == "Active").then_some(()))
    })
    .await?;
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "placed\n".into())
    );
    stack.shutdown().await
}
