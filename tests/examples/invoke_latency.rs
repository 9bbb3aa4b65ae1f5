//! Benchmark (not a test): what the invocation proxy and its event recording add to a call.
//! One run measures the same function three ways, sequentially, so the figures compare as
//! ratios: straight to its container (the baseline), through the proxy with event recording
//! off, and through the proxy with it on (the default).
//!
//! ```sh
//! bench/invoke-latency.sh          # SLIPWAY_BENCH_CALLS=2000 by default
//! ```

use std::time::Instant;

use slipway_shared::config::ApiConfig;
use slipway_tests::{
    StackOptions, StoreKind, TestStack,
    bench::{self, Figures, print_table},
    hello_archive,
};
use uuid::Uuid;

async fn measure(
    request: impl Fn() -> reqwest::RequestBuilder,
    calls: usize,
) -> anyhow::Result<Figures> {
    for _ in 0..50 {
        request().send().await?.bytes().await?;
    }
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let response = request().send().await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        response.bytes().await?;
        took.push(started.elapsed());
    }
    Ok(Figures::of(took))
}

async fn stack(record_events: bool) -> anyhow::Result<(TestStack, Uuid, String)> {
    fn events_off(config: &mut ApiConfig) {
        config.record_events = false;
    }
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        api_overrides: (!record_events).then_some(events_off as fn(&mut ApiConfig)),
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("bench").await?;
    let (deployment, _) = stack.deploy(function_id, hello_archive("bench\n")?).await?;
    stack.wait_active(deployment).await?;
    let endpoint: String = sqlx::query_scalar(
        "SELECT runtime_endpoint FROM deployments WHERE function_id = $1 AND is_active",
    )
    .bind(function_id)
    .fetch_one(&stack.pool)
    .await?;
    Ok((stack, function_id, endpoint))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls = bench::calls(2000)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut rows = Vec::new();
    for record_events in [false, true] {
        let (stack, function_id, endpoint) = stack(record_events).await?;
        if !record_events {
            let direct = measure(|| client.get(format!("http://{endpoint}/")), calls).await?;
            rows.push(("direct to the container", direct));
        }
        let url = stack.url(&format!("/api/v1/functions/invoke/{function_id}"));
        let proxied = measure(|| client.get(&url).bearer_auth(&stack.api_key), calls).await?;
        rows.push((
            if record_events {
                "proxy, events recorded"
            } else {
                "proxy, events off"
            },
            proxied,
        ));
        stack.shutdown().await?;
    }
    println!("{calls} sequential GETs each");
    print_table("path", "p50÷direct", &rows);
    Ok(())
}
