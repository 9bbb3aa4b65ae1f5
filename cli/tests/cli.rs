//! The `slipway` client against a running stack (real Postgres, BuildKit, registry, runtime):
//! init, a signed deploy that follows the build log and exits 0 once active, invoke, status,
//! an idempotent re-run, a failed build's exit code, delete and cancel.

use std::process::Output;

use serde_json::Value;
use slipway_tests::{StackOptions, StoreKind, TestStack, repo_root};

fn slipway(stack: &TestStack, home: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .current_dir(repo_root())
        .env("SLIPWAY_URL", &stack.base_url)
        .env("SLIPWAY_API_KEY", &stack.api_key)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the slipway binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deploys_with_the_cli_and_the_exit_code_says_how_it_went() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let home = tempfile::tempdir()?;
    let run = |args: &[&str]| slipway(&stack, home.path(), args);

    let init = tokio::task::block_in_place(|| run(&["init", "from-ci"]));
    assert!(init.status.success(), "{}", text(&init));

    // The function requires signatures (the default): the CLI signs.
    let deploy = tokio::task::block_in_place(|| {
        run(&[
            "deploy",
            "examples/hello",
            "--function",
            "from-ci",
            "--wait",
        ])
    });
    assert!(deploy.status.success(), "{}", text(&deploy));
    let out = String::from_utf8_lossy(&deploy.stdout);
    assert!(
        out.lines().any(|l| l.starts_with("build")),
        "{}",
        text(&deploy)
    );
    assert_eq!(out.lines().last(), Some("active"), "{}", text(&deploy));

    let invoke = tokio::task::block_in_place(|| run(&["invoke", "from-ci"]));
    assert!(invoke.status.success(), "{}", text(&invoke));
    assert_eq!(String::from_utf8_lossy(&invoke.stdout), "hello from v1\n");

    let status = tokio::task::block_in_place(|| run(&["status", "from-ci", "--json"]));
    let status: Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(status["state"], "Active");
    assert_eq!(status["active_version"], 1);

    // A pipeline re-running the same step gets the same deployment, not a second one.
    let again = tokio::task::block_in_place(|| {
        run(&[
            "deploy",
            "examples/hello",
            "--function",
            "from-ci",
            "--json",
        ])
    });
    assert!(again.status.success(), "{}", text(&again));
    let again: Value = serde_json::from_slice(&again.stdout)?;
    let history: Value = stack
        .get(&format!(
            "/api/functions/{}/deployments",
            status["id"].as_str().unwrap()
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(history["count"], 1, "{again}");
    assert_eq!(again["version"], 1);

    // A build that fails: exit code 1, and the reason printed.
    let broken = tempfile::tempdir()?;
    std::fs::write(
        broken.path().join("Dockerfile"),
        "FROM scratch\nCOPY missing /\n",
    )?;
    let failed = tokio::task::block_in_place(|| {
        run(&[
            "deploy",
            broken.path().to_str().unwrap(),
            "--function",
            "from-ci",
            "--wait",
        ])
    });
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(
        String::from_utf8_lossy(&failed.stdout).contains("failed: "),
        "{}",
        text(&failed)
    );

    let delete = tokio::task::block_in_place(|| run(&["delete", "from-ci"]));
    assert!(delete.status.success(), "{}", text(&delete));
    let cancel = tokio::task::block_in_place(|| run(&["cancel-delete", "from-ci"]));
    assert!(cancel.status.success(), "{}", text(&cancel));
    let unknown = tokio::task::block_in_place(|| run(&["status", "nobody"]));
    assert!(!unknown.status.success());
    stack.shutdown().await
}
