//! The `slipway` client against a running stack (real Postgres, BuildKit, registry, runtime):
//! init, a signed deploy that follows the build log and exits 0 once active, invoke, status,
//! an idempotent re-run, a failed build's exit code, delete and cancel.

use std::process::Output;

use serde_json::Value;
use slipway_tests::{StackOptions, StoreKind, TestStack, repo_root};

fn slipway(stack: &TestStack, home: &std::path::Path, args: &[&str]) -> Output {
    slipway_with(stack, home, args, &[])
}

fn slipway_with(
    stack: &TestStack,
    home: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let signer = stack
        .signer_of(&stack.api_key)
        .expect("the stack's key has a signing secret");
    std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .env("SLIPWAY_URL", &stack.base_url)
        .env("SLIPWAY_API_KEY", &stack.api_key)
        .env("SLIPWAY_KEY_ID", signer.key_id.to_string())
        .env("SLIPWAY_SIGNING_SECRET", &signer.secret)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_bindings_are_made_listed_and_removed_from_the_cli() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let home = tempfile::tempdir()?;
    let secret = "a-webhook-secret-from-the-env";
    let run = |args: &[&str]| {
        tokio::task::block_in_place(|| {
            slipway_with(
                &stack,
                home.path(),
                args,
                &[("HOOK_SECRET", secret), ("GIT_TOKEN", "token-from-the-env")],
            )
        })
    };
    assert!(run(&["init", "from-git"]).status.success());

    let bind = run(&[
        "git-bind",
        "from-git",
        "--provider",
        "gitlab",
        "--repository",
        "group/app",
        "--clone-url",
        "https://gitlab.invalid/group/app.git",
        "--subdirectory",
        "svc",
        "--secret-env",
        "HOOK_SECRET",
        "--username",
        "ci",
        "--password-env",
        "GIT_TOKEN",
    ]);
    assert!(bind.status.success(), "{}", text(&bind));
    let out = String::from_utf8_lossy(&bind.stdout);
    assert!(out.contains("/api/webhooks/gitlab"), "{}", text(&bind));

    let missing = run(&[
        "git-bind",
        "from-git",
        "--provider",
        "gitlab",
        "--repository",
        "group/app",
        "--clone-url",
        "https://gitlab.invalid/group/app.git",
        "--secret-env",
        "NOT_SET_ANYWHERE",
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("$NOT_SET_ANYWHERE is not set"),
        "{}",
        text(&missing)
    );

    let list = run(&["git-bindings", "from-git", "--json"]);
    assert!(list.status.success(), "{}", text(&list));
    let list: Value = serde_json::from_slice(&list.stdout)?;
    let bindings = list["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{list}");
    assert_eq!(bindings[0]["subdirectory"], "svc");
    assert_eq!(bindings[0]["has_credentials"], true);
    assert!(!list.to_string().contains(secret));

    let id = bindings[0]["id"].as_str().unwrap();
    let unbind = run(&["git-unbind", id, "--function", "from-git"]);
    assert!(unbind.status.success(), "{}", text(&unbind));
    let list = run(&["git-bindings", "from-git", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(list["bindings"], serde_json::json!([]));
    stack.shutdown().await
}
