//! Benchmark (not a test): Slipway's invocation proxy against nginx as a reverse proxy, on the
//! same function, with wrk (Debian's) on loopback. In one run and alternating, round after
//! round: straight to the container (the floor), through nginx (keep-alive upstreams, the
//! config generated here), and through Slipway's invoke route with event recording on. It
//! prints each path's median over the rounds and Slipway's ratios to nginx; the target (issue
//! 17) is ≥ 0.8 of nginx's throughput with p50 and p99 within 2×, at 1 and at 8 connections.
//!
//! Two functions, one table each: the test function (busybox httpd, which closes every
//! connection after its answer, so no proxy can keep one open to it) and a function made from
//! handler code on the node template, whose server keeps connections alive.
//!
//! ```sh
//! SLIPWAY_BENCH_PROFILE=release bench/invoke-latency.sh
//! SLIPWAY_BENCH_ROUNDS=5 SLIPWAY_BENCH_SECONDS=10 bench/invoke-latency.sh
//! SLIPWAY_BENCH_HOLD=1 bench/invoke-latency.sh   # deploys, prints the URL, waits (profiling)
//! ```

use std::{process::Stdio, time::Duration};

use anyhow::{Context, bail};
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};

/// One wrk run's figures.
#[derive(Clone, Copy)]
struct Run {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    std::env::var(name).map_or(Ok(default), |raw| {
        raw.parse().with_context(|| format!("{name}={raw:?}"))
    })
}

/// `171.00us`, `1.23ms`, `2.00s` as wrk prints them.
fn wrk_duration(raw: &str) -> anyhow::Result<Duration> {
    let (number, unit) = raw
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|at| raw.split_at(at))
        .context("a duration without unit")?;
    let number: f64 = number.parse()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        other => bail!("unknown unit {other:?} in {raw:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_wrk(output: &str) -> anyhow::Result<Run> {
    let mut p50 = None;
    let mut p99 = None;
    let mut rate = None;
    for line in output.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["50%", value] => p50 = Some(wrk_duration(value)?),
            ["99%", value] => p99 = Some(wrk_duration(value)?),
            ["Requests/sec:", value] => rate = Some(value.parse()?),
            _ => {}
        }
        if line.starts_with("Non-2xx or 3xx responses") {
            bail!("wrk saw failed requests:\n{output}");
        }
    }
    Ok(Run {
        requests_per_second: rate.context("no Requests/sec")?,
        p50: p50.context("no 50%")?,
        p99: p99.context("no 99%")?,
    })
}

async fn wrk(url: &str, connections: u32, seconds: u64, key: Option<&str>) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg(format!("-t{}", connections.min(2)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(key) = key {
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {key}"));
    }
    let output = command
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text)
}

/// What every run of one function's comparison shares.
struct Bench<'a> {
    stack: &'a TestStack,
    function_id: uuid::Uuid,
    /// The function's container, `address:port`.
    endpoint: &'a str,
    nginx_dir: &'a tempfile::TempDir,
}

impl Bench<'_> {
    /// One wrk run of one path; when it fails, what the proxy in between saw of it: nginx's
    /// error log, or Slipway's events of the calls that did not succeed.
    async fn measure(
        &self,
        (name, url, key): (&str, &str, Option<&str>),
        connections: u32,
        seconds: u64,
    ) -> anyhow::Result<Run> {
        wait_for_ports(self.endpoint).await?;
        let run = wrk(url, connections, seconds, key).await;
        if run.is_ok() {
            return run;
        }
        let seen = match name {
            "slipway" => self.unsuccessful_invocations().await,
            "nginx" => {
                let log = std::fs::read_to_string(self.nginx_dir.path().join("error.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                format!("nginx's error log ends: {tail:?}")
            }
            _ => "wrk ran straight to the function".to_owned(),
        };
        run.with_context(|| format!("the {name} run at {connections} connection(s) failed; {seen}"))
    }

    async fn unsuccessful_invocations(&self) -> String {
        // The event writer stores what it holds every 20 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let outcomes: Result<Vec<(String, i64)>, _> = sqlx::query_as(
            "SELECT coalesce(status_code::text, 'no answer') || ' ' || coalesce(failure_reason, ''),
                    count(*)
             FROM invocation_events
             WHERE function_id = $1 AND (status_code IS NULL OR status_code NOT BETWEEN 200 AND 399)
             GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
        )
        .bind(self.function_id)
        .fetch_all(&self.stack.pool)
        .await;
        match outcomes {
            Ok(outcomes) if outcomes.is_empty() => "Slipway recorded no unsuccessful \
                 invocation: the failed calls were refused before they were routed"
                .to_owned(),
            Ok(outcomes) => {
                format!("Slipway's events of the unsuccessful invocations: {outcomes:?}")
            }
            Err(e) => format!("reading Slipway's events failed: {e}"),
        }
    }
}

/// Waits until at most half the machine's ephemeral ports are in `TIME_WAIT` towards the
/// function's endpoint. Every call to the busybox function is a new connection from this
/// network namespace to the same address and port, and each closed one keeps its port for 60 s.
/// A run straight to the container (~1,800 calls/s for 5 s) takes a third of the ports; without
/// a pause, some run soon after finds none left, and its connects fail with `EADDRNOTAVAIL`
/// (502s from nginx and from Slipway alike).
async fn wait_for_ports(endpoint: &str) -> anyhow::Result<()> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let ports: Vec<u32> = range
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [low, high] = ports[..] else {
        bail!("ip_local_port_range is {range:?}");
    };
    let endpoint: std::net::SocketAddrV4 = endpoint.parse()?;
    // /proc/net/tcp spells an IPv4 address as its bytes in host order, the port big-endian.
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(endpoint.ip().octets()),
        endpoint.port()
    );
    let started = tokio::time::Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp")?;
        let waiting = table
            .lines()
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"06")
            })
            .count() as u32;
        if waiting <= (high - low) / 2 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(90),
            "{waiting} connections to {endpoint} are still in TIME_WAIT after 90 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let waited = started.elapsed();
    if waited >= Duration::from_secs(1) {
        eprintln!("(waited {waited:.0?} for ports in TIME_WAIT towards {endpoint} to free up)");
    }
    Ok(())
}

/// nginx in front of the container, as a reverse proxy is usually set up: keep-alive to the
/// upstream, no access log; as many workers as cores, like Slipway's runtime.
async fn start_nginx(
    dir: &std::path::Path,
    endpoint: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
        socket.local_addr()?.port()
    };
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {dir}/body;\n\
               proxy_temp_path {dir}/proxy;\n\
               fastcgi_temp_path {dir}/fastcgi;\n\
               uwsgi_temp_path {dir}/uwsgi;\n\
               scgi_temp_path {dir}/scgi;\n\
               upstream function {{ server {endpoint}; keepalive 32; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://function;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                 }}\n\
               }}\n\
             }}\n",
            dir = dir.display()
        ),
    )?;
    let child = tokio::process::Command::new("nginx")
        .args(["-e", &dir.join("error.log").display().to_string()])
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    let url = format!("http://127.0.0.1:{port}/");
    let client = reqwest::Client::builder().no_proxy().build()?;
    for _ in 0..100 {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok((child, url));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "nginx did not answer at {url}; see {}",
        dir.join("error.log").display()
    )
}

/// Stops nginx with `nginx -s quit` however the benchmark ends: the master takes its workers
/// with it (killing the master alone leaves them listening).
struct NginxGuard(std::path::PathBuf);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        let quit = std::process::Command::new("nginx")
            .arg("-c")
            .arg(self.0.join("nginx.conf"))
            .args(["-s", "quit"])
            .status();
        if !quit.as_ref().is_ok_and(|status| status.success()) {
            eprintln!("nginx -s quit failed: {quit:?}; see {}", self.0.display());
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = env_number("SLIPWAY_BENCH_ROUNDS", 3)? as usize;
    let seconds = env_number("SLIPWAY_BENCH_SECONDS", 5)?;
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    // Profiling the proxy: the keep-alive function only, its URLs printed, held until Ctrl-C.
    if std::env::var_os("SLIPWAY_BENCH_HOLD").is_some() {
        let node = node_function(&stack).await?;
        println!(
            "key {}\nslipway {}\nholding; Ctrl-C ends",
            stack.api_key,
            stack.url(&format!("/api/v1/functions/invoke/{node}"))
        );
        tokio::signal::ctrl_c().await?;
        return stack.shutdown().await;
    }
    let busybox = stack.init("bench").await?;
    let (deployment, _) = stack.deploy(busybox, hello_archive("bench\n")?).await?;
    stack.wait_active(deployment).await?;
    println!("busybox httpd (examples/hello): a connection per request");
    compare(&stack, busybox, rounds, seconds).await?;
    let node = node_function(&stack).await?;
    println!();
    println!(
        "the node template (`export default function(data) {{ return \"bench\"; }}`): keep-alive"
    );
    compare(&stack, node, rounds, seconds).await?;
    stack.shutdown().await
}

/// A function from handler code on the node template, built and deployed in two steps.
async fn node_function(stack: &TestStack) -> anyhow::Result<uuid::Uuid> {
    let created: serde_json::Value = stack
        .post("/api/v1/functions")
        .json(&serde_json::json!({
            "label": "bench-node", "template": "node", "runtime": "node",
            "handler": "export default function(data) { return \"bench\"; }\n",
        }))
        .send()
        .await?
        .json()
        .await?;
    let id: uuid::Uuid = created["id"]
        .as_str()
        .context("the function's id")?
        .parse()?;
    let built: serde_json::Value = stack
        .post(&format!("/api/v1/functions/build/{id}"))
        .send()
        .await?
        .json()
        .await?;
    let deployment: uuid::Uuid = built["deployment_id"]
        .as_str()
        .with_context(|| format!("build: {built}"))?
        .parse()?;
    let settled = stack
        .wait_settled_as(&stack.api_key, deployment, Duration::from_secs(180))
        .await?;
    if settled["status"] != "built" {
        bail!("the node function did not build: {settled}");
    }
    stack
        .post(&format!("/api/v1/functions/deploy/{id}"))
        .send()
        .await?
        .error_for_status()?;
    stack.wait_active(deployment).await?;
    Ok(id)
}

/// Direct, nginx and Slipway on one function: medians over the rounds, and the ratios.
async fn compare(
    stack: &TestStack,
    function_id: uuid::Uuid,
    rounds: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let endpoint: String = sqlx::query_scalar(
        "SELECT runtime_endpoint FROM deployments WHERE function_id = $1 AND is_active",
    )
    .bind(function_id)
    .fetch_one(&stack.pool)
    .await?;
    let nginx_dir = tempfile::tempdir()?;
    let (_nginx, nginx_url) = start_nginx(nginx_dir.path(), &endpoint).await?;
    let _stop_nginx = NginxGuard(nginx_dir.path().to_owned());
    let direct_url = format!("http://{endpoint}/");
    let slipway_url = stack.url(&format!("/api/v1/functions/invoke/{function_id}"));
    let paths = [
        ("direct", direct_url.as_str(), None),
        ("nginx", nginx_url.as_str(), None),
        (
            "slipway",
            slipway_url.as_str(),
            Some(stack.api_key.as_str()),
        ),
    ];

    println!(
        "wrk, {seconds} s per run, {rounds} rounds alternating direct / nginx / slipway; medians"
    );
    println!(
        "| connections | path | req/s | p50 | p99 | req/s ÷ nginx | p50 ÷ nginx | p99 ÷ nginx |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    // Each round's Slipway run against the nginx run just before it: how far apart single runs
    // land on a shared machine, which the medians hide.
    let bench = Bench {
        stack,
        function_id,
        endpoint: &endpoint,
        nginx_dir: &nginx_dir,
    };
    let mut per_round = Vec::new();
    for connections in [1, 8] {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); paths.len()];
        // Warm every path's connections and caches before anything counts.
        for path in paths {
            bench.measure(path, connections, 1).await?;
        }
        for _ in 0..rounds {
            for (index, path) in paths.into_iter().enumerate() {
                runs[index].push(bench.measure(path, connections, seconds).await?);
            }
        }
        let medians: Vec<(f64, f64, f64)> = runs
            .iter()
            .map(|runs| {
                (
                    median(runs.iter().map(|r| r.requests_per_second).collect()),
                    median(runs.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect()),
                    median(runs.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect()),
                )
            })
            .collect();
        let nginx = medians[1];
        for ((name, _, _), (rate, p50, p99)) in paths.iter().zip(&medians) {
            println!(
                "| {connections} | {name} | {rate:.0} | {p50:.2} ms | {p99:.2} ms | {:.2} | {:.2} | {:.2} |",
                rate / nginx.0,
                p50 / nginx.1,
                p99 / nginx.2,
            );
        }
        let ratios: Vec<String> = runs[1]
            .iter()
            .zip(&runs[2])
            .map(|(nginx, slipway)| {
                format!(
                    "{:.2}",
                    slipway.requests_per_second / nginx.requests_per_second
                )
            })
            .collect();
        per_round.push(format!(
            "{connections} connection(s), slipway ÷ nginx req/s by round: {}",
            ratios.join(", ")
        ));
    }
    println!();
    for line in per_round {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let run = parse_wrk(
            "Running 5s test @ http://127.0.0.1:1/\n  Latency Distribution\n     50%  171.00us\n     \
             75%  200.00us\n     90%    1.00ms\n     99%    2.50ms\n  20000 requests in 5.00s\n\
             Requests/sec:   4144.20\nTransfer/sec:    1.00MB\n",
        )
        .unwrap();
        assert_eq!(run.p50, Duration::from_micros(171));
        assert_eq!(run.p99, Duration::from_micros(2500));
        assert!((run.requests_per_second - 4144.2).abs() < 1e-9);
    }
}
