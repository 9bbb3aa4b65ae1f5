//! Postgres restarts under a running stack (a private server, so the rest of the suite is not
//! disturbed): while it is down the api answers 503 `database_unavailable` with `Retry-After`;
//! once it is back, the api, the worker and the queue carry on by themselves (no restart of
//! Slipway) and nothing is lost or left in flight.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A Postgres cluster of its own, run as the `postgres` user, on a free port.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn as_postgres(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(program))
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!(
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl PrivatePostgres {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let uid_gid = Command::new("id").args(["-u", "postgres"]).output()?;
        let uid: u32 = String::from_utf8(uid_gid.stdout)?.trim().parse()?;
        std::os::unix::fs::chown(dir.path(), Some(uid), None)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Self { dir, port };
        as_postgres(
            "initdb",
            &[
                "-D",
                &server.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        server.up()?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn up(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.path().join("log").display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
    }

    fn down(&self) -> anyhow::Result<()> {
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

/// Waits until the caller's invocation events are `count`, all settled, and returns them.
async fn settled_events(stack: &TestStack, count: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    eventually(
        Duration::from_secs(30),
        &format!("{count} settled events"),
        || async {
            let page: serde_json::Value = stack.get("/api/v3/events").send().await?.json().await?;
            let events = page["events"].as_array().context("events")?.clone();
            let settled = events.iter().all(|event| event["status"] != "PENDING");
            Ok((events.len() == count && settled).then_some(events))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_rides_out_a_postgres_restart_without_losing_anything() -> anyhow::Result<()> {
    let postgres = PrivatePostgres::start()?;
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        postgres_admin_url: Some(postgres.admin_url()),
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("restarted").await?;
    let (first, _) = stack
        .deploy(function_id, hello_archive("before\n")?)
        .await?;
    stack.wait_active(first).await?;
    // An invocation whose event is written before the outage: the event writer's own
    // connection is open when Postgres goes away, and has to be replaced.
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "before\n".into())
    );
    settled_events(&stack, 1).await?;

    postgres.down()?;
    let outage = async {
        let answer = stack
            .get(&format!("/api/functions/{function_id}"))
            .send()
            .await?;
        anyhow::ensure!(
            answer.status() == 503,
            "during the outage: {}",
            answer.status()
        );
        anyhow::ensure!(answer.headers().contains_key("retry-after"));
        let body: serde_json::Value = answer.json().await?;
        anyhow::ensure!(body["error"]["code"] == "database_unavailable", "{body}");
        anyhow::Ok(())
    }
    .await;
    postgres.up()?;
    outage.context("the api while Postgres is down")?;

    // The api recovers by itself …
    eventually(Duration::from_secs(30), "the api back", || async {
        let answer = stack
            .get(&format!("/api/functions/{function_id}"))
            .send()
            .await?;
        Ok((answer.status() == 200).then_some(()))
    })
    .await?;
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "before\n".into())
    );
    // … and so do the worker and its queue: a deploy after the restart goes all the way.
    let (second, _) = stack.deploy(function_id, hello_archive("after\n")?).await?;
    stack
        .wait_active(second)
        .await
        .context("a deploy after the restart")?;
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "after\n".into())
    );

    // Every invocation recorded, before the outage and after it.
    let events = settled_events(&stack, 3).await?;
    assert!(
        events.iter().all(|event| event["status"] == "SUCCESS"),
        "{events:?}"
    );

    // Nothing left in flight or lost: two versions, the second serving, the first settled.
    let history = stack.history(function_id).await?;
    let statuses: Vec<(i64, &str)> = history["deployments"]
        .as_array()
        .context("deployments")?
        .iter()
        .filter_map(|d| Some((d["version"].as_i64()?, d["status"].as_str()?)))
        .collect();
    assert_eq!(statuses.len(), 2, "{history}");
    for (version, status) in statuses {
        match version {
            2 => assert_eq!(status, "active", "{history}"),
            _ => assert!(["superseded", "inactive"].contains(&status), "{history}"),
        }
    }
    stack.shutdown().await?;
    drop(postgres);
    Ok(())
}
