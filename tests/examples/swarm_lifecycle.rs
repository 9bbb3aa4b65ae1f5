//! Benchmark (not a test): what the Swarm runtime costs beside the one-engine runtime, in one
//! run on the same machine: deploy → serving (upload to the first answer of the new version),
//! a cold wake (0 → 1 replica → first answer) and, on the swarm only, recovery after the node
//! that runs the task stops (from the stop to the first answer from another node).
//!
//! ```sh
//! bench/swarm.sh      # SLIPWAY_BENCH_ROUNDS=5, SLIPWAY_BENCH_NODE_STOPS=2 by default
//! ```

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive, repo_root};
use uuid::Uuid;

fn count(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::var(name)
        .ok()
        .map_or(Ok(default), |v| v.parse().with_context(|| name.to_owned()))
}

fn median(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took.get(took.len() / 2).copied().unwrap_or_default()
}

async fn answers(stack: &TestStack, function_id: Uuid, body: &str) -> anyhow::Result<bool> {
    let (status, got) = stack.invoke(function_id, "").await?;
    Ok(status == 200 && got == body)
}

/// Fires the idle sweep as if `16 + tick` minutes had passed: a tick fires once, so every
/// sweep needs a tick of its own.
async fn fire_idle(stack: &TestStack, tick: usize) -> anyhow::Result<()> {
    // The sweep stamps its (future) tick on what it releases and skips a function stamped
    // after its last invocation; the bench's clock jumps ahead, so it forgets the stamp.
    sqlx::query("UPDATE functions SET release_enqueued_at = NULL")
        .execute(&stack.pool)
        .await?;
    let idle = slipway_shared::config::SchedulerConfig {
        cron_idle: "0 * * * * *".into(),
        ..Default::default()
    };
    slipway_shared::schedule::fire(
        &stack.pool,
        &idle,
        slipway_shared::schedule::Sweep::Idle,
        chrono::Utc::now() + chrono::TimeDelta::minutes(16 + tick as i64),
        "bench",
        true,
    )
    .await?;
    Ok(())
}

async fn endpoint(stack: &TestStack, function_id: Uuid) -> anyhow::Result<String> {
    let endpoint: Option<String> = sqlx::query_scalar(
        "SELECT runtime_endpoint FROM deployments WHERE function_id = $1 AND is_active",
    )
    .bind(function_id)
    .fetch_one(&stack.pool)
    .await?;
    endpoint.context("no endpoint")
}

fn swarm_script(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(repo_root().join("scripts/swarm.sh"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "scripts/swarm.sh {args:?}: {status}");
    Ok(())
}

fn node_of(endpoint: &str) -> anyhow::Result<&'static str> {
    let address = endpoint.rsplit_once(':').context("host:port")?.0;
    ["worker1", "worker2"]
        .into_iter()
        .find(|node| {
            std::env::var(format!("SLIPWAY_SWARM_ADDR_{}", node.to_uppercase())).as_deref()
                == Ok(address)
        })
        .with_context(|| format!("{endpoint} is on no worker node"))
}

struct Figures {
    deploy: Duration,
    wake: Duration,
    recovery: Option<Duration>,
}

async fn measure(swarm: bool, rounds: usize, node_stops: usize) -> anyhow::Result<Figures> {
    let options = if swarm {
        StackOptions::swarm()
    } else {
        StackOptions::default()
    };
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..options
    })
    .await?;
    let function_id = stack.init("bench").await?;
    let (mut deploys, mut wakes, mut recoveries) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let body = format!("round {round}\n");
        let started = Instant::now();
        stack.deploy(function_id, hello_archive(&body)?).await?;
        eventually(Duration::from_secs(120), "the new version", || async {
            Ok(answers(&stack, function_id, &body).await?.then_some(()))
        })
        .await?;
        deploys.push(started.elapsed());

        // The release stands down if an invocation is recorded after the sweep picked the
        // function (the proxy records them asynchronously): sweep again on a later tick.
        let mut inactive = false;
        for attempt in 0..10 {
            fire_idle(&stack, round * 10 + attempt).await?;
            inactive = eventually(Duration::from_secs(5), "Inactive", || async {
                Ok((stack.function(function_id).await?["state"] == "Inactive").then_some(()))
            })
            .await
            .is_ok();
            if inactive {
                break;
            }
        }
        if !inactive {
            let function = stack.function(function_id).await?;
            let jobs: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT job_type, status, last_result::text FROM apalis.jobs ORDER BY run_at DESC LIMIT 8",
            )
            .fetch_all(&stack.pool)
            .await?;
            anyhow::bail!("round {round} (swarm: {swarm}): never Inactive: {function}\n{jobs:#?}");
        }
        let started = Instant::now();
        anyhow::ensure!(answers(&stack, function_id, &body).await?, "the wake");
        wakes.push(started.elapsed());
    }
    if swarm {
        for _ in 0..node_stops {
            let before = endpoint(&stack, function_id).await?;
            let node = node_of(&before)?;
            let started = Instant::now();
            swarm_script(&["stop-node", node])?;
            let moved = eventually(Duration::from_secs(120), "another node", || async {
                let now = endpoint(&stack, function_id).await?;
                let (status, _) = stack.invoke(function_id, "").await?;
                Ok((now != before && status == 200).then_some(()))
            })
            .await;
            recoveries.push(started.elapsed());
            swarm_script(&["start-node", node])?;
            moved?;
        }
    }
    stack.shutdown().await?;
    Ok(Figures {
        deploy: median(deploys),
        wake: median(wakes),
        recovery: (!recoveries.is_empty()).then(|| median(recoveries)),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = count("SLIPWAY_BENCH_ROUNDS", 5)?;
    let node_stops = count("SLIPWAY_BENCH_NODE_STOPS", 2)?;
    let one_engine = measure(false, rounds, 0).await?;
    let swarm = measure(true, rounds, node_stops).await?;
    println!("medians of {rounds} rounds ({node_stops} node stops on the swarm)");
    println!(
        "{:<12} {:>18} {:>12} {:>26}",
        "runtime", "deploy → serving", "cold wake", "recovery after node stop"
    );
    for (name, figures) in [("one engine", &one_engine), ("swarm", &swarm)] {
        println!(
            "{:<12} {:>18} {:>12} {:>26}",
            name,
            format!("{:.2?}", figures.deploy),
            format!("{:.2?}", figures.wake),
            figures
                .recovery
                .map_or("n/a (no other node)".to_owned(), |r| format!("{r:.2?}")),
        );
    }
    println!(
        "swarm ÷ one engine: deploy {:.2}×, cold wake {:.2}×",
        swarm.deploy.as_secs_f64() / one_engine.deploy.as_secs_f64(),
        swarm.wake.as_secs_f64() / one_engine.wake.as_secs_f64()
    );
    Ok(())
}
