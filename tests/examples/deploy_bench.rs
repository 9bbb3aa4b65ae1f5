//! Benchmark (not a test): the deploy pipeline's own figures on the real stack (BuildKit in the
//! engine, the registry, the runtime), from the timestamps each deployment records:
//! - per stage, p50 and p99 over `SLIPWAY_BENCH_DEPLOYS` (50) deploys one after another: queue
//!   wait (accepted → build started), build (→ built), push (→ pushed, the push job's own wait
//!   included), cache-warm + start + initializer (→ active), total;
//! - throughput with 20 and `SLIPWAY_BENCH_WIDE` (100) distinct functions deployed at once:
//!   deploys per minute and the time until all serve;
//! - identical redeploys (the same archive again): accepted → active, and whether BuildKit was
//!   skipped;
//! - the control plane's share of a deploy: what is left of the total once BuildKit, the push
//!   and the start are taken out.
//!
//! ```sh
//! SLIPWAY_BENCH_PROFILE=release bench/deploy.sh
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use slipway_shared::{config::WorkerConfig, db};
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};
use uuid::Uuid;

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::var(name).map_or(Ok(default), |raw| {
        raw.parse().with_context(|| format!("{name}={raw:?}"))
    })
}

/// As the dev stack runs: four builds at once.
fn four_build_slots(config: &mut WorkerConfig) {
    config.build_slots_per_owner = 4;
}

#[derive(sqlx::FromRow)]
struct Stamps {
    created_at: DateTime<Utc>,
    build_started_at: Option<DateTime<Utc>>,
    built_at: Option<DateTime<Utc>>,
    pushed_at: Option<DateTime<Utc>>,
    deployed_at: Option<DateTime<Utc>>,
    build_reused_from: Option<Uuid>,
}

fn seconds(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<f64> {
    Some((to? - from?).to_std().ok()?.as_secs_f64())
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn stamps(stack: &TestStack, ids: &[Uuid]) -> anyhow::Result<Vec<Stamps>> {
    Ok(sqlx::query_as(
        "SELECT created_at, build_started_at, built_at, pushed_at, deployed_at, build_reused_from
         FROM deployments WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&stack.pool)
    .await?)
}

/// Deploys `archives` all at once, each to a new function of a tenant of its own (a key may
/// upload only a few archives at a time); the deployments and the wall time until every one
/// serves.
async fn deploy_at_once(
    stack: &TestStack,
    prefix: &str,
    archives: Vec<Vec<u8>>,
) -> anyhow::Result<(Vec<Uuid>, Duration)> {
    let mut tenants = Vec::new();
    for index in 0..archives.len() {
        let key = stack.add_tenant().await?;
        let response = stack
            .request_as(&key, reqwest::Method::POST, "/api/functions/init")
            .json(&serde_json::json!({ "name": format!("{prefix}-{index}") }))
            .send()
            .await?;
        let body: serde_json::Value = response.json().await?;
        let function_id: Uuid = body["id"].as_str().context("init")?.parse()?;
        tenants.push((key, function_id));
    }
    let started = Instant::now();
    let deployed = futures::future::try_join_all(tenants.iter().zip(archives).map(
        |((key, function_id), archive)| async move {
            let form = slipway_tests::deploy_form(&function_id.to_string(), archive)?;
            let response = stack
                .request_as(key, reqwest::Method::POST, "/api/functions/deploy")
                .multipart(form)
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            anyhow::ensure!(status == 202, "deploy answered {status}: {body}");
            let deployment: Uuid = body["deployment_id"]
                .as_str()
                .context("deployment_id")?
                .parse()?;
            stack.wait_active_as(key, deployment).await?;
            Ok::<_, anyhow::Error>(deployment)
        },
    ))
    .await?;
    Ok((deployed, started.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sequential = env_number("SLIPWAY_BENCH_DEPLOYS", 50)?;
    let wide = env_number("SLIPWAY_BENCH_WIDE", 100)?;
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(four_build_slots),
        ..Default::default()
    })
    .await?;
    {
        let mut conn = stack.pool.acquire().await?;
        db::users::set_function_quota(&mut conn, stack.user_id, Some(10_000)).await?;
    }

    // One after another: each stage on its own.
    let mut ids = Vec::new();
    let mut first_of = Vec::new();
    for index in 0..sequential {
        let archive = hello_archive(&format!("deploy {index}\n"))?;
        let function_id = stack.init(&format!("seq-{index}")).await?;
        let (deployment, _) = stack.deploy(function_id, archive.clone()).await?;
        stack.wait_active(deployment).await?;
        ids.push(deployment);
        first_of.push((function_id, archive));
    }
    let rows = stamps(&stack, &ids).await?;
    let stage =
        |f: &dyn Fn(&Stamps) -> Option<f64>| -> Vec<f64> { rows.iter().filter_map(f).collect() };
    let stages: [(&str, Vec<f64>); 5] = [
        (
            "queue wait",
            stage(&|s| seconds(Some(s.created_at), s.build_started_at)),
        ),
        (
            "build (BuildKit)",
            stage(&|s| seconds(s.build_started_at, s.built_at)),
        ),
        ("push", stage(&|s| seconds(s.built_at, s.pushed_at))),
        (
            "cache-warm + start + initializer",
            stage(&|s| seconds(s.pushed_at, s.deployed_at)),
        ),
        (
            "total",
            stage(&|s| seconds(Some(s.created_at), s.deployed_at)),
        ),
    ];
    println!("{sequential} deploys of examples/hello one after another, release build of Slipway");
    println!("| stage | p50 | p99 |");
    println!("| --- | --- | --- |");
    for (name, values) in &stages {
        println!(
            "| {name} | {:.0} ms | {:.0} ms |",
            percentile(values, 0.5) * 1e3,
            percentile(values, 0.99) * 1e3
        );
    }
    // What is neither BuildKit, the push nor the instance's start: the queue, the hand-offs
    // between jobs and the bookkeeping.
    let shares: Vec<f64> = rows
        .iter()
        .filter_map(|s| {
            let total = seconds(Some(s.created_at), s.deployed_at)?;
            let outside = seconds(s.build_started_at, s.built_at)?
                + seconds(s.built_at, s.pushed_at)?
                + seconds(s.pushed_at, s.deployed_at)?;
            Some((total - outside) / total)
        })
        .collect();
    println!(
        "control plane's own share of a deploy (total − build − push − start): p50 {:.1} %",
        percentile(&shares, 0.5) * 100.0
    );

    // Identical redeploys: the same archives again.
    let redeploys = first_of.len().min(20);
    let mut took = Vec::new();
    let mut reused = 0;
    for (function_id, archive) in first_of.into_iter().take(redeploys) {
        let started = Instant::now();
        let (deployment, _) = stack.deploy(function_id, archive).await?;
        stack.wait_active(deployment).await?;
        took.push(started.elapsed().as_secs_f64());
        reused += stamps(&stack, &[deployment]).await?[0]
            .build_reused_from
            .is_some() as usize;
    }
    println!(
        "identical redeploy, accepted → serving: p50 {:.0} ms, p99 {:.0} ms ({reused} of {redeploys} reused the image, no BuildKit call)",
        percentile(&took, 0.5) * 1e3,
        percentile(&took, 0.99) * 1e3
    );

    // Many distinct functions at once.
    for (label, count) in [("20", 20), ("wide", wide)] {
        let archives = (0..count)
            .map(|index| hello_archive(&format!("{label} {index}\n")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (deployed, elapsed) =
            deploy_at_once(&stack, &format!("at-once-{label}"), archives).await?;
        let rows = stamps(&stack, &deployed).await?;
        let waits: Vec<f64> = rows
            .iter()
            .filter_map(|s| seconds(Some(s.created_at), s.build_started_at))
            .collect();
        println!(
            "{count} distinct functions at once: all serving after {:.1} s, {:.0} deploys/min, queue wait p50 {:.0} ms",
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64() * 60.0,
            percentile(&waits, 0.5) * 1e3
        );
    }
    stack.shutdown().await
}
