//! Live build logs: `?follow=true` streams the log as server-sent events while BuildKit works,
//! in order, and ends with the deployment's final state; `Last-Event-ID` resumes a stream.

use futures::StreamExt;
use serde_json::Value;
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};

/// Reads an SSE response to its end: (event, id, data) triples.
async fn read_events(response: reqwest::Response) -> anyhow::Result<Vec<(String, String, Value)>> {
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk?)?);
    }
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            }
        }
        if !event.is_empty() {
            events.push((event, id, serde_json::from_str(&data)?));
        }
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_streams_buildkit_steps_in_order_and_ends_with_the_outcome()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("streamed").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("streamed\n")?)
        .await?;
    let response = stack
        .get(&format!("/api/deployments/{deployment}/logs?follow=true"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response).await?;

    let (last, _, outcome) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    assert_eq!(outcome["status"], "active");
    let lines: Vec<&(String, String, Value)> = events.iter().filter(|e| e.0 == "line").collect();
    let ids: Vec<i64> = lines.iter().map(|e| e.1.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    let phases: Vec<&str> = lines.iter().filter_map(|e| e.2["phase"].as_str()).collect();
    let first = |phase: &str| phases.iter().position(|p| *p == phase).unwrap();
    assert!(
        first("build") < first("push") && first("push") < first("deploy"),
        "{phases:?}"
    );
    assert!(
        lines
            .iter()
            .any(|e| e.2["phase"] == "build" && e.2["stream"] == "step"),
        "BuildKit's steps are in the stream"
    );

    // A reconnect resumes after the last line seen.
    let middle = &ids[ids.len() / 2];
    let resumed = stack
        .get(&format!("/api/deployments/{deployment}/logs?follow=true"))
        .header("last-event-id", middle.to_string())
        .send()
        .await?;
    let resumed = read_events(resumed).await?;
    let resumed_ids: Vec<i64> = resumed
        .iter()
        .filter(|e| e.0 == "line")
        .map(|e| e.1.parse().unwrap())
        .collect();
    assert_eq!(resumed_ids, ids[ids.len() / 2 + 1..].to_vec());
    assert_eq!(resumed.last().unwrap().0, "end");

    let bad = stack
        .get(&format!("/api/deployments/{deployment}/logs?follow=maybe"))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    stack.shutdown().await
}
