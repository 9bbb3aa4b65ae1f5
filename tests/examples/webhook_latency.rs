//! Benchmark (not a test): how fast a push webhook is answered. Providers give up after about
//! 10 s and may not retry, so the answer must not wait for any git, build or registry work. One
//! run, sequential calls, compared as ratios against `GET /healthz` (one Postgres round trip):
//! a new push (claim the delivery, lock the function, order the push, insert the deployment,
//! supersede the waiting one, enqueue `source`), and a redelivery of a handled id.
//!
//! ```sh
//! bench/webhook-latency.sh          # SLIPWAY_BENCH_CALLS=1000 by default
//! ```

use anyhow::Context;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use slipway_tests::{
    StackOptions, StoreKind, TestStack,
    bench::{self, Figures, print_table},
};

const SECRET: &str = "a-webhook-secret-for-the-bench";

/// A GitHub push of commit `n` on top of commit `n - 1`, signed.
fn push(stack: &TestStack, url: &str, n: usize, delivery: &str) -> reqwest::RequestBuilder {
    let sha = |n: usize| format!("{n:040x}");
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": if n == 1 { "0".repeat(40) } else { sha(n - 1) },
        "after": sha(n),
        "repository": {"full_name": "bench/app"},
        "head_commit": {"id": sha(n), "timestamp": "2026-11-23T10:00:00Z"},
    }))
    .expect("a JSON payload");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&body);
    stack
        .http
        .post(stack.url(url))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body)
}

async fn timed(request: reqwest::RequestBuilder, expect: u16) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    anyhow::ensure!(status == expect, "status {status}, expected {expect}");
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls = bench::calls(1000)?;
    // No worker: the queue fills, and nothing but the api competes for the two cores.
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("bench").await?;
    let binding = stack
        .post(&format!("/api/functions/{function_id}/git-bindings"))
        .json(&json!({
            "provider": "github", "repository": "bench/app", "branch": "main",
            "clone_url": "https://git.invalid/bench/app.git", "secret": SECRET,
        }))
        .send()
        .await?;
    anyhow::ensure!(
        binding.status() == 201,
        "binding: {}",
        binding.text().await?
    );
    let binding: serde_json::Value = binding.json().await?;
    let url = binding["webhook_path"]
        .as_str()
        .context("webhook_path")?
        .to_owned();

    for _ in 0..50 {
        timed(stack.http.get(stack.url("/healthz")), 200).await?;
    }
    let mut health = Vec::with_capacity(calls);
    let mut new_pushes = Vec::with_capacity(calls);
    let mut redeliveries = Vec::with_capacity(calls);
    for n in 1..=calls {
        health.push(timed(stack.http.get(stack.url("/healthz")), 200).await?);
        let delivery = format!("bench-{n}");
        new_pushes.push(timed(push(&stack, &url, n, &delivery), 202).await?);
        redeliveries.push(timed(push(&stack, &url, n, &delivery), 200).await?);
    }
    let superseded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deployments WHERE status = 'superseded'")
            .fetch_one(&stack.pool)
            .await?;
    stack.shutdown().await?;

    println!("{calls} sequential calls each; {superseded} waiting pushes superseded on the way");
    print_table(
        "request",
        "p50÷health",
        &[
            ("GET /healthz", Figures::of(health)),
            ("new push (202)", Figures::of(new_pushes)),
            ("redelivery (200)", Figures::of(redeliveries)),
        ],
    );
    Ok(())
}
