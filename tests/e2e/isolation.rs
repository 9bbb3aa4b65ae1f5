//! Tenant isolation, tried the way a tenant would try to break it: a probe function deployed
//! like any other reports what it reaches (the platform's Postgres, registry and API, the
//! host's other ports, another tenant's function, a link-local address) and what it runs with
//! (uid, capabilities, cgroup limits); functions that eat memory or fork without end; builds
//! that fetch URLs, build on another tenant's image, read another tenant's cache, or hold every
//! build slot. Every path that must be closed is shown open from the platform's side first, so
//! a "blocked" means the firewall or the sandbox blocked it, not a typo in the test.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use slipway_tests::{TestStack, eventually, hello_archive, pack_dir, repo_root, required_env};
use uuid::Uuid;

fn probe_archive(overrides: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
    pack_dir(
        &repo_root().join("tests/functions/probe"),
        &overrides.iter().copied().collect(),
    )
}

/// Asks the probe to open a TCP connection to each target; true for those it reached.
async fn reach(
    stack: &TestStack,
    function_id: Uuid,
    targets: &[String],
) -> anyhow::Result<BTreeMap<String, bool>> {
    let (status, body) = stack
        .invoke(
            function_id,
            &format!("/cgi-bin/reach?{}", targets.join(",")),
        )
        .await?;
    if status != 200 {
        bail!("the probe answered {status}: {body}");
    }
    Ok(body
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(target, outcome)| (target.to_owned(), outcome == "reached"))
        .collect())
}

/// `key=value` lines of the probe's `/cgi-bin/whoami`.
async fn whoami(stack: &TestStack, function_id: Uuid) -> anyhow::Result<BTreeMap<String, String>> {
    let (status, body) = stack.invoke(function_id, "/cgi-bin/whoami").await?;
    if status != 200 {
        bail!("whoami answered {status}: {body}");
    }
    Ok(body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// `PUT /api/v1/functions/{id}` with `changes`; the function as it answers.
async fn update(stack: &TestStack, function_id: Uuid, changes: Value) -> anyhow::Result<Value> {
    let response = stack
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/functions/{function_id}"),
        )
        .json(&changes)
        .send()
        .await?;
    if response.status() != 200 {
        bail!("PUT {changes} answered {}", response.status());
    }
    Ok(response.json().await?)
}

/// The address the platform reaches the function's active instance at.
async fn endpoint_of(stack: &TestStack, function_id: Uuid) -> anyhow::Result<String> {
    let endpoint: Option<String> = sqlx::query_scalar(
        "SELECT runtime_endpoint FROM deployments WHERE function_id = $1 AND is_active",
    )
    .bind(function_id)
    .fetch_one(&stack.pool)
    .await?;
    endpoint.context("the active deployment has no endpoint")
}

/// Whether a TCP connection to `target` opens from inside the functions' network namespace,
/// where the engine and its firewall live: the platform's view of the same address.
fn reachable_from_runtime_namespace(target: &str) -> anyhow::Result<bool> {
    let (host, port) = target.rsplit_once(':').context("host:port")?;
    let status = Command::new("timeout")
        .args([
            "3",
            "ip",
            "netns",
            "exec",
            &required_env("SLIPWAY_RUNTIME_NETNS"),
        ])
        .args(["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// The port of `scheme://[user@]host:port[/…]`.
fn port_of(url: &str) -> anyhow::Result<u16> {
    let authority = url.split_once("://").context("a URL")?.1;
    let host_port = authority.split('/').next().unwrap_or_default();
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    Ok(host_port.rsplit_once(':').context("a port")?.1.parse()?)
}

fn run(command: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(command[0]).args(&command[1..]).status()?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// An HTTP listener on a link-local address, in a network namespace of its own, routed from the
/// functions' namespace: what the instance metadata address would be to a function, without
/// ever sending anything to the real one (169.254.169.254).
struct LinkLocalListener {
    namespace: String,
    address: String,
    server: Child,
}

impl LinkLocalListener {
    fn start() -> anyhow::Result<Self> {
        let tag = &Uuid::new_v4().simple().to_string()[..6];
        let namespace = format!("slwll-{tag}");
        // Never 169.254.169.x: the real metadata service's neighbourhood stays untouched.
        let subnet = 10 + u8::from_str_radix(&tag[..2], 16)? % 150;
        let address = format!("169.254.{subnet}.1");
        let runtime = required_env("SLIPWAY_RUNTIME_NETNS");
        let veth = format!("llv{tag}");
        run(&["ip", "netns", "add", &namespace])?;
        // From here on, dropping it removes the namespace again.
        let mut listener = Self {
            server: Command::new("true").spawn()?,
            namespace: namespace.clone(),
            address: address.clone(),
        };
        run(&[
            "ip", "link", "add", &veth, "netns", &runtime, "type", "veth", "peer", "name", "eth0",
            "netns", &namespace,
        ])?;
        run(&[
            "ip",
            "-n",
            &runtime,
            "addr",
            "add",
            &format!("169.254.{subnet}.2/24"),
            "dev",
            &veth,
        ])?;
        run(&["ip", "-n", &runtime, "link", "set", &veth, "up"])?;
        run(&[
            "ip",
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &namespace, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &namespace, "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "-n",
            &namespace,
            "route",
            "add",
            "default",
            "via",
            &format!("169.254.{subnet}.2"),
        ])?;
        listener.server.wait().ok();
        listener.server = Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-m", "http.server"])
            .args(["--bind", &address, "8080"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(listener)
    }

    fn target(&self) -> String {
        format!("{}:8080", self.address)
    }
}

impl Drop for LinkLocalListener {
    fn drop(&mut self) {
        self.server.kill().ok();
        self.server.wait().ok();
        // Deleting the namespace deletes both ends of its veth.
        run(&["ip", "netns", "del", &self.namespace]).ok();
    }
}

#[tokio::test]
async fn a_function_reaches_nothing_of_the_platform_or_of_other_tenants() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    // Another tenant, with its own stack's user, on the same engine.
    let neighbour = TestStack::start().await?;
    let victim = neighbour.init("victim").await?;
    let (deployment, _) = neighbour
        .deploy(victim, hello_archive("private\n")?)
        .await?;
    neighbour.wait_active(deployment).await?;
    let victim_endpoint = endpoint_of(&neighbour, victim).await?;

    let link_local = LinkLocalListener::start()?;
    let host_port = TcpListener::bind("0.0.0.0:0")?;
    let platform = required_env("SLIPWAY_PLATFORM_ADDR");
    let registry = required_env("SLIPWAY_REGISTRY");
    let pg_port = port_of(&required_env("DATABASE_URL"))?;
    let api_port = port_of(&stack.base_url)?;
    let host_listener = format!("{platform}:{}", host_port.local_addr()?.port());

    // Open from the platform's side: so a closed path below is the firewall's doing.
    for target in [&registry, &host_listener, &link_local.target()] {
        let open = eventually(Duration::from_secs(10), target, || async {
            Ok(reachable_from_runtime_namespace(target)?.then_some(()))
        })
        .await;
        assert!(
            open.is_ok(),
            "{target} does not answer the platform: no control"
        );
    }
    let (status, body) = neighbour.invoke(victim, "").await?;
    assert_eq!((status, body.as_str()), (200, "private\n"));
    let direct = stack
        .http
        .get(format!("http://{victim_endpoint}/"))
        .send()
        .await?;
    assert_eq!(
        direct.status(),
        200,
        "the platform reaches the victim directly"
    );

    let function_id = stack.init("probe").await?;
    let (deployment, _) = stack.deploy(function_id, probe_archive(&[])?).await?;
    stack.wait_active(deployment).await?;
    let own_endpoint = endpoint_of(&stack, function_id).await?;
    let gateway = {
        let ip: std::net::Ipv4Addr = own_endpoint.rsplit_once(':').unwrap().0.parse()?;
        // Docker gives a /28 network's gateway its first address.
        let first = u32::from(ip) & !0xf;
        std::net::Ipv4Addr::from(first + 1).to_string()
    };
    let targets = vec![
        format!("127.0.0.1:{pg_port}"),
        format!("{platform}:{pg_port}"),
        registry.clone(),
        format!("127.0.0.1:{api_port}"),
        format!("{platform}:{api_port}"),
        host_listener.clone(),
        victim_endpoint.clone(),
        link_local.target(),
        format!("{gateway}:80"),
        format!("{gateway}:22"),
    ];
    let reached = reach(&stack, function_id, &targets).await?;
    assert_eq!(
        reached.len(),
        targets.len(),
        "one answer per target: {reached:?}"
    );
    let open: Vec<_> = reached.iter().filter(|(_, r)| **r).collect();
    assert!(open.is_empty(), "the probe reached {open:?}");

    // The probe still serves through the proxy, and can reach itself.
    let (status, body) = stack.invoke(function_id, "").await?;
    assert_eq!((status, body.as_str()), (200, "probe\n"));
    let own = reach(&stack, function_id, std::slice::from_ref(&own_endpoint)).await?;
    assert_eq!(
        own.get(&own_endpoint),
        Some(&true),
        "a positive control inside"
    );

    neighbour.shutdown().await?;
    stack.shutdown().await
}

#[tokio::test]
async fn instances_run_unprivileged_within_the_functions_limits() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("confined").await?;
    let function = update(
        &stack,
        function_id,
        json!({"limits": {"memory_mb": 48, "cpu": 0.5, "pids": 32}}),
    )
    .await?;
    assert_eq!(
        function["limits"],
        json!({"memory_mb": 48, "cpu": 0.5, "pids": 32})
    );
    assert_eq!(function["read_only_root_fs"], true);

    // Past the operator's maximums, or nonsense: refused, nothing changes.
    for (limits, code) in [
        (json!({"memory_mb": 1_000_000}), "invalid_limits"),
        (json!({"cpu": -1}), "invalid_limits"),
        (json!({"pids": 1}), "invalid_limits"),
        (json!({"swap": 1}), "invalid_body"),
    ] {
        let response = stack
            .request(
                reqwest::Method::PUT,
                &format!("/api/v1/functions/{function_id}"),
            )
            .json(&json!({ "limits": limits }))
            .send()
            .await?;
        assert!(response.status().is_client_error(), "{limits} was accepted");
        let refused: Value = response.json().await?;
        assert_eq!(refused["error"]["code"], code, "{limits}");
    }
    assert_eq!(
        stack.function(function_id).await?["limits"]["memory_mb"],
        48
    );

    let (probe, _) = stack.deploy(function_id, probe_archive(&[])?).await?;
    stack.wait_active(probe).await?;
    let facts = whoami(&stack, function_id).await?;
    assert_ne!(facts["uid"], "0", "not root: {facts:?}");
    assert_eq!(facts["capeff"], "0000000000000000", "no capabilities");
    assert_eq!(facts["memory"], (48u64 * 1024 * 1024).to_string());
    assert_eq!(facts["pids"], "32");
    assert_eq!(facts["root"], "read-only");
    assert_eq!(facts["tmp"], "writable");

    // A fork bomb stays inside its pids limit, and the rest of the machine keeps answering.
    let bystander = stack.init("bystander").await?;
    let (deployment, _) = stack
        .deploy(bystander, hello_archive("still here\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let (status, body) = stack.invoke(function_id, "/cgi-bin/forkbomb").await?;
    assert_eq!(status, 200, "{body}");
    let started: u32 = body
        .trim()
        .strip_prefix("started=")
        .context("forkbomb's answer")?
        .parse()?;
    assert!((1..32).contains(&started), "{started} processes started");
    assert_eq!(
        stack.invoke(bystander, "").await?,
        (200, "still here\n".to_owned())
    );

    // The opt-out of the read-only root, applied by a restart.
    update(&stack, function_id, json!({"read_only_root_fs": false})).await?;
    let response = stack
        .post(&format!("/api/v1/functions/{function_id}/runtime/restart"))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let writable = eventually(Duration::from_secs(60), "a writable root", || async {
        Ok(whoami(&stack, function_id)
            .await
            .ok()
            .filter(|facts| facts.get("root").map(String::as_str) == Some("writable")))
    })
    .await;
    if writable.is_err() {
        let log: Value = stack
            .get(&format!("/api/deployments/{probe}/logs"))
            .send()
            .await?
            .json()
            .await?;
        bail!("no writable root after the restart: {log}");
    }
    stack.shutdown().await
}

#[tokio::test]
async fn a_function_past_its_memory_is_killed_and_says_so() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("hungry").await?;
    update(&stack, function_id, json!({"limits": {"memory_mb": 32}})).await?;
    // Reads 256 MiB into one buffer before it would ever listen.
    let hog = "FROM slipway/busybox:1\nENTRYPOINT [\"/bin/busybox\", \"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=256M\", \"count=1\"]\n";
    let (deployment, _) = stack
        .deploy(function_id, probe_archive(&[("Dockerfile", hog)])?)
        .await?;
    let log = stack
        .wait_settled(deployment, Duration::from_secs(120))
        .await?;
    assert_eq!(log["status"], "failed");
    let error = log["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("out_of_memory:"), "{error}");
    let function = stack.function(function_id).await?;
    assert_eq!(function["state"], "Failed");
    assert!(
        function["state_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("out_of_memory:")),
        "{function}"
    );
    stack.shutdown().await
}

#[tokio::test]
async fn an_instance_killed_for_its_memory_while_serving_fails_its_function_until_restarted()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("grows").await?;
    update(&stack, function_id, json!({"limits": {"memory_mb": 32}})).await?;
    // Serves (httpd in the background) until armed, then its main process eats 256 MiB.
    let grows = "FROM slipway/busybox:1\nCOPY www /www\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"httpd -p $PORT -h /www && while [ ! -f /tmp/armed ]; do sleep 0.2; done; exec dd if=/dev/zero of=/dev/null bs=256M count=1\"]\n";
    let (deployment, _) = stack
        .deploy(function_id, probe_archive(&[("Dockerfile", grows)])?)
        .await?;
    stack.wait_active(deployment).await?;
    let (status, body) = stack.invoke(function_id, "/cgi-bin/arm").await?;
    assert_eq!((status, body.trim()), (200, "armed"));
    let function = eventually(Duration::from_secs(30), "the OOM kill recorded", || async {
        let function = stack.function(function_id).await?;
        Ok((function["state"] == "Failed").then_some(function))
    })
    .await?;
    let reason = function["state_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("out_of_memory:"), "{function}");
    let (status, _) = stack.invoke(function_id, "").await?;
    assert_ne!(status, 200, "a Failed function takes no invocations");

    // A restart is a fresh instance: Active again, serving until armed again.
    let response = stack
        .post(&format!("/api/v1/functions/{function_id}/runtime/restart"))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    eventually(
        Duration::from_secs(60),
        "Active after the restart",
        || async {
            let function = stack.function(function_id).await?;
            let (status, body) = stack.invoke(function_id, "").await?;
            Ok((function["state"] == "Active" && status == 200 && body == "probe\n").then_some(()))
        },
    )
    .await?;
    stack.shutdown().await
}

/// Deploys `dockerfile` (beside the probe's files) as `key`'s function; the answer to the
/// upload.
async fn deploy_as(
    stack: &TestStack,
    key: &str,
    name: &str,
    dockerfile: &str,
) -> anyhow::Result<(Uuid, u16, Value)> {
    let response = stack
        .request_as(key, reqwest::Method::POST, "/api/functions/init")
        .json(&json!({ "name": name }))
        .send()
        .await?;
    let created: Value = response.json().await?;
    let function_id: Uuid = created["id"].as_str().context("id")?.parse()?;
    let form = reqwest::multipart::Form::new()
        .text("function_id", function_id.to_string())
        .part(
            "archive",
            reqwest::multipart::Part::bytes(probe_archive(&[("Dockerfile", dockerfile)])?)
                .file_name("function.tar.gz"),
        );
    let response = stack
        .request_as(key, reqwest::Method::POST, "/api/functions/deploy")
        .multipart(form)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((function_id, status, response.json().await?))
}

fn deployment_id(answer: &Value) -> anyhow::Result<Uuid> {
    Ok(answer["deployment_id"]
        .as_str()
        .with_context(|| format!("no deployment in {answer}"))?
        .parse()?)
}

#[tokio::test]
async fn builds_fetch_no_urls_and_use_no_other_tenants_images() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let registry = required_env("SLIPWAY_REGISTRY");
    let other = stack.add_tenant().await?;
    let (_, status, answer) = deploy_as(&stack, &other, "secret", "FROM slipway/busybox:1\nCOPY www /www\nRUN echo other-tenant-secret > /www/secret\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n").await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_active_as(&other, deployment_id(&answer)?)
        .await?;
    let their_image: String = sqlx::query_scalar("SELECT image_tag FROM deployments WHERE id = $1")
        .bind(deployment_id(&answer)?)
        .fetch_one(&stack.pool)
        .await?;

    let refused = [
        ("ADD http://{registry}/v2/_catalog /catalog", 2),
        ("add HTTPS://example.com/x /x", 2),
        ("COPY --chown=1:1 git@github.com:a/b.git /x", 2),
        ("COPY --from={their_image} /www/secret /secret", 2),
        ("RUN --network=host true", 2),
    ];
    for (line, number) in refused {
        let line = line
            .replace("{registry}", &registry)
            .replace("{their_image}", &their_image);
        let dockerfile = format!("FROM slipway/busybox:1\n{line}\n");
        let (function_id, status, answer) = deploy_as(
            &stack,
            &stack.api_key,
            &format!("bad-{number}-{}", &Uuid::new_v4().simple().to_string()[..6]),
            &dockerfile,
        )
        .await?;
        assert_eq!(status, 400, "{line}: {answer}");
        assert_eq!(answer["error"]["code"], "dockerfile_refused", "{line}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("line {number}")),
            "{line}: {message}"
        );
        let versions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deployments WHERE function_id = $1")
                .bind(function_id)
                .fetch_one(&stack.pool)
                .await?;
        assert_eq!(versions, 0, "nothing is stored for a refused Dockerfile");
    }
    // Another tenant's image as a base, by tag or through an ARG: refused.
    for dockerfile in [
        format!("FROM {their_image}\n"),
        format!("ARG BASE={their_image}\nFROM ${{BASE}}\n"),
    ] {
        let (_, status, answer) = deploy_as(
            &stack,
            &stack.api_key,
            &format!("steal-{}", &Uuid::new_v4().simple().to_string()[..6]),
            &dockerfile,
        )
        .await?;
        assert_eq!(status, 400, "{dockerfile}: {answer}");
        assert_eq!(answer["error"]["code"], "dockerfile_refused");
    }
    // The tenant's own image is fine to build on.
    let (_, status, answer) =
        deploy_as(&stack, &other, "derived", &format!("FROM {their_image}\n")).await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_active_as(&other, deployment_id(&answer)?)
        .await?;
    stack.shutdown().await
}

const SERVE_WWW: &str =
    "ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n";

/// A build that records what a shared-looking cache mount held (`/www/seen`), then leaves
/// `marker` in it.
fn cache_dockerfile(marker: &str) -> String {
    format!(
        "FROM slipway/busybox:1\nCOPY www /www\n\
         RUN --mount=type=cache,id=shared,target=/cache sh -c \
         'cat /cache/secret > /www/seen 2>/dev/null || echo nothing > /www/seen; echo {marker} > /cache/secret'\n\
         {SERVE_WWW}"
    )
}

async fn seen(stack: &TestStack, answer: &Value, function_id: Uuid) -> anyhow::Result<String> {
    stack.wait_active(deployment_id(answer)?).await?;
    let (status, body) = stack.invoke(function_id, "/seen").await?;
    if status != 200 {
        bail!("/seen answered {status}: {body}");
    }
    Ok(body.trim().to_owned())
}

#[tokio::test]
async fn a_build_cache_is_its_owners_alone() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let (first, status, answer) = deploy_as(
        &stack,
        &stack.api_key,
        "cache-a1",
        &cache_dockerfile(&format!("alpha-{tag}")),
    )
    .await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(seen(&stack, &answer, first).await?, "nothing");
    // The same owner's next build finds its own cache: the mount works, so a miss below is
    // the scoping's doing.
    let (second, status, answer) = deploy_as(
        &stack,
        &stack.api_key,
        "cache-a2",
        &cache_dockerfile(&format!("alpha2-{tag}")),
    )
    .await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(seen(&stack, &answer, second).await?, format!("alpha-{tag}"));

    let other = stack.add_tenant().await?;
    let (theirs, status, answer) = deploy_as(
        &stack,
        &other,
        "cache-b",
        &cache_dockerfile(&format!("beta-{tag}")),
    )
    .await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_active_as(&other, deployment_id(&answer)?)
        .await?;
    let response = stack
        .request_as(
            &other,
            reqwest::Method::GET,
            &format!("/api/v1/functions/invoke/{theirs}/seen"),
        )
        .send()
        .await?;
    let body = response.text().await?;
    assert_eq!(body.trim(), "nothing", "another tenant read the cache");
    stack.shutdown().await
}

#[tokio::test]
async fn one_owner_cannot_hold_every_build_slot() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let greedy = stack.add_tenant().await?;
    // Four builds that sleep: as many as a worker runs at once, twice the owner's share.
    let mut greedy_deployments = Vec::new();
    for n in 0..4 {
        let dockerfile =
            format!("FROM slipway/busybox:1\nCOPY www /www\nRUN sleep 20 && echo {n}\n{SERVE_WWW}");
        let (_, status, answer) =
            deploy_as(&stack, &greedy, &format!("slow-{n}"), &dockerfile).await?;
        assert_eq!(status, 202, "{answer}");
        greedy_deployments.push(deployment_id(&answer)?);
    }
    eventually(
        Duration::from_secs(30),
        "the greedy owner's builds started",
        || async { Ok((started_builds(&stack, &greedy_deployments).await? == 2).then_some(())) },
    )
    .await?;

    let (patient, status, answer) = deploy_as(
        &stack,
        &stack.api_key,
        "patient",
        &format!("FROM slipway/busybox:1\nCOPY www /www\n{SERVE_WWW}"),
    )
    .await?;
    assert_eq!(status, 202, "{answer}");
    stack.wait_active(deployment_id(&answer)?).await?;
    assert_eq!(stack.invoke(patient, "").await?.0, 200);
    // Served while the greedy owner's builds still hold their two slots, and no more.
    assert_eq!(started_builds(&stack, &greedy_deployments).await?, 2);
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployment_logs WHERE deployment_id = ANY($1) AND message LIKE 'waiting for a build slot%'",
    )
    .bind(&greedy_deployments)
    .fetch_one(&stack.pool)
    .await?;
    assert_eq!(waiting, 2, "each waiting build says why, once");
    stack.shutdown().await
}

async fn started_builds(stack: &TestStack, deployments: &[Uuid]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM deployments WHERE id = ANY($1) AND build_started_at IS NOT NULL",
    )
    .bind(deployments)
    .fetch_one(&stack.pool)
    .await?)
}

#[tokio::test]
async fn no_other_tenant_receives_a_functions_traffic_across_restarts_and_wakes()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    // The squatter listens on the same port as every function, and would take any address.
    let squatter_key = stack.add_tenant().await?;
    let (squatter, status, answer) = deploy_as(&stack, &squatter_key, "squatter", &format!(
        "FROM slipway/busybox:1\nCOPY www /www\nRUN echo squatted > /www/index.html\n{SERVE_WWW}"
    )).await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_active_as(&squatter_key, deployment_id(&answer)?)
        .await?;
    let squatter_endpoint = endpoint_of(&stack, squatter).await?;

    // The victim's Initializer answers 500 once: its first instance is restarted in place.
    let victim = stack.init("victim").await?;
    update(
        &stack,
        victim,
        json!({"lifecycle": {"initializer": {"timeout_s": 30}}, "read_only_root_fs": false}),
    )
    .await?;
    let hooks = pack_dir(&repo_root().join("examples/hooks"), &BTreeMap::new())?;
    let (status, body) = stack
        .deploy_raw(
            &victim.to_string(),
            hooks,
            Some(r#"{"INIT_FAILURES": "1", "INIT_FAILURE_STATUS": "500"}"#),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    stack.wait_active(deployment_id(&body)?).await?;

    let check = |when: &'static str| {
        let stack = &stack;
        let squatter_endpoint = squatter_endpoint.clone();
        async move {
            let endpoint = endpoint_of(stack, victim).await?;
            assert_ne!(endpoint, squatter_endpoint, "{when}");
            let (status, body) = stack.invoke(victim, "").await?;
            assert_eq!(status, 200, "{when}: {body}");
            assert!(
                body.starts_with("ready"),
                "{when}: the victim's own answer, not {body:?}"
            );
            anyhow::Ok(())
        }
    };
    check("after an Initializer 5xx restart").await?;
    let active_container = || async {
        let container: Option<String> = sqlx::query_scalar(
            "SELECT container_id FROM deployments WHERE function_id = $1 AND is_active",
        )
        .bind(victim)
        .fetch_one(&stack.pool)
        .await?;
        anyhow::Ok(container)
    };
    for action in ["restart", "recycle"] {
        let before = active_container().await?;
        let response = stack
            .post(&format!("/api/v1/functions/{victim}/runtime/{action}"))
            .send()
            .await?;
        assert_eq!(response.status(), 202);
        eventually(Duration::from_secs(60), action, || async {
            let replaced = active_container()
                .await?
                .is_some_and(|c| Some(&c) != before.as_ref());
            let (status, body) = stack.invoke(victim, "").await?;
            Ok((replaced && status == 200 && body.starts_with("ready")).then_some(()))
        })
        .await?;
        check(action).await?;
    }
    // Idle → Inactive (instances released) → woken by the next invocation.
    let idle = slipway_shared::config::SchedulerConfig {
        cron_idle: "0 * * * * *".into(),
        ..Default::default()
    };
    let later = chrono::Utc::now() + chrono::TimeDelta::minutes(16);
    slipway_shared::schedule::fire(
        &stack.pool,
        &idle,
        slipway_shared::schedule::Sweep::Idle,
        later,
        "test",
        true,
    )
    .await?;
    eventually(Duration::from_secs(30), "the victim released", || async {
        let function = stack.function(victim).await?;
        Ok((function["state"] == "Inactive" && active_container().await?.is_none()).then_some(()))
    })
    .await?;
    check("after an idle release and a wake").await?;

    // The squatter, meanwhile, only ever answered for itself.
    let response = stack
        .request_as(
            &squatter_key,
            reqwest::Method::GET,
            &format!("/api/v1/functions/invoke/{squatter}"),
        )
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "squatted\n");
    stack.shutdown().await
}
