//! Deploys from git pushes: a real git server on loopback (`git http-backend`), real pushes with
//! the `git` CLI, and deliveries signed as GitHub, GitLab and Gitea sign them.

use std::{path::Path, time::Duration};

use anyhow::Context;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use slipway_shared::{
    db,
    jobs::{Job, SourceJob},
};
use slipway_tests::{
    StackOptions, StoreKind, TestStack, eventually,
    git_server::{GitServer, SshServer, git},
    repo_root,
};
use uuid::Uuid;

const SECRET: &str = "a-webhook-secret-for-tests";

#[derive(Clone, Copy, Debug)]
enum Provider {
    Github,
    Gitlab,
    Gitea,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
        }
    }
}

/// One commit pushed to a branch, as the provider reports it.
struct PushedCommit<'a> {
    repository: &'a str,
    branch: &'a str,
    before: Option<&'a str>,
    after: &'a str,
    committed_at: &'a str,
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The payload and headers the provider sends for `event` (`push` means its push event),
/// signed with `secret`.
fn delivery(
    provider: Provider,
    event: &str,
    push: &PushedCommit<'_>,
    secret: &str,
    delivery_id: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let before = push.before.map_or("0".repeat(40), str::to_owned);
    let head = json!({"id": push.after, "message": "a commit", "timestamp": push.committed_at});
    let payload = match provider {
        Provider::Github | Provider::Gitea => json!({
            "ref": format!("refs/heads/{}", push.branch),
            "before": before,
            "after": push.after,
            "repository": {"full_name": push.repository},
            "head_commit": head,
            "commits": [head],
        }),
        Provider::Gitlab => json!({
            "object_kind": "push",
            "ref": format!("refs/heads/{}", push.branch),
            "before": before,
            "after": push.after,
            "checkout_sha": push.after,
            "project": {"path_with_namespace": push.repository},
            "commits": [head],
        }),
    };
    let body = serde_json::to_vec(&payload).unwrap();
    let header = |name: &str, value: String| (name.to_owned(), value);
    let headers = match provider {
        Provider::Github => vec![
            header(
                "x-github-event",
                if event == "push" { "push" } else { event }.into(),
            ),
            header("x-github-delivery", delivery_id.into()),
            header(
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(secret, &body)),
            ),
        ],
        Provider::Gitlab => vec![
            header(
                "x-gitlab-event",
                if event == "push" { "Push Hook" } else { event }.into(),
            ),
            header("x-gitlab-event-uuid", delivery_id.into()),
            header("x-gitlab-token", secret.into()),
        ],
        Provider::Gitea => vec![
            header("x-gitea-event", event.into()),
            header("x-gitea-delivery", delivery_id.into()),
            header("x-gitea-signature", hmac_hex(secret, &body)),
        ],
    };
    (headers, body)
}

/// Sends the delivery to `path`, as a provider whose webhook points there would.
async fn send_to(
    stack: &TestStack,
    path: &str,
    (headers, body): (Vec<(String, String)>, Vec<u8>),
) -> anyhow::Result<(u16, Value)> {
    let mut request = stack
        .http
        .post(stack.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text)
        .with_context(|| format!("POST {path} answered {status}: {text:?}"))?;
    Ok((status, body))
}

/// Sends the delivery to the URL of the stack's binding of the repository it names, as the
/// provider configured with that binding's URL would (a random binding's URL when none).
async fn send(
    stack: &TestStack,
    provider: Provider,
    delivery: (Vec<(String, String)>, Vec<u8>),
) -> anyhow::Result<(u16, Value)> {
    let payload: Value = serde_json::from_slice(&delivery.1).unwrap_or_default();
    let repository = payload["repository"]["full_name"]
        .as_str()
        .or_else(|| payload["project"]["path_with_namespace"].as_str())
        .unwrap_or_default();
    let binding: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM git_bindings WHERE provider = $1 AND lower(repository) = lower($2)
         ORDER BY created_at LIMIT 1",
    )
    .bind(provider.name())
    .bind(repository)
    .fetch_optional(&stack.pool)
    .await?;
    let binding = binding.unwrap_or_else(Uuid::new_v4);
    send_to(
        stack,
        &format!("/api/webhooks/{}/{binding}", provider.name()),
        delivery,
    )
    .await
}

/// Sends `commit` as `provider`'s push under `delivery_id`, signed with the binding's secret.
async fn deliver_push(
    stack: &TestStack,
    provider: Provider,
    commit: &PushedCommit<'_>,
    delivery_id: &str,
) -> anyhow::Result<(u16, Value)> {
    send(
        stack,
        provider,
        delivery(provider, "push", commit, SECRET, delivery_id),
    )
    .await
}

/// The deployment a delivery's answer queued.
fn queued(answer: &Value) -> anyhow::Result<Uuid> {
    Ok(answer["deployments"][0]["deployment_id"]
        .as_str()
        .with_context(|| format!("no deployment was queued: {answer}"))?
        .parse()?)
}

async fn bind(
    stack: &TestStack,
    function_id: Uuid,
    binding: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = stack
        .post(&format!("/api/functions/{function_id}/git-bindings"))
        .json(&binding)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

async fn counts(stack: &TestStack) -> anyhow::Result<(i64, i64, usize)> {
    let mut conn = stack.conn().await?;
    let jobs = db::queue::jobs(&mut conn, &[SourceJob::NAME]).await?.len();
    drop(conn);
    Ok((
        stack.count("deployments").await?,
        stack.count("webhook_deliveries").await?,
        jobs,
    ))
}

/// A working copy of examples/hello under `functions/hello`, greeting `greeting`, committed with
/// `message`; returns the commit and its time.
fn commit_hello(work: &Path, greeting: &str, message: &str) -> anyhow::Result<(String, String)> {
    let function = work.join("functions/hello");
    std::fs::create_dir_all(function.join("www"))?;
    std::fs::copy(
        repo_root().join("examples/hello/Dockerfile"),
        function.join("Dockerfile"),
    )?;
    std::fs::write(function.join("www/index.html"), greeting)?;
    std::fs::write(work.join("README.md"), "not part of the function\n")?;
    git(work, &["add", "-A"])?;
    git(work, &["commit", "--quiet", "-m", message])?;
    Ok((
        git(work, &["rev-parse", "HEAD"])?,
        git(work, &["log", "-1", "--format=%cI"])?,
    ))
}

/// A function bound, through `provider`, to the `functions/hello` directory of `acme/<name>`, a
/// repository the worker fetches over file://; the git server that holds it; its clone URL.
async fn bound_over_file(
    stack: &TestStack,
    provider: Provider,
    name: &str,
) -> anyhow::Result<(Uuid, GitServer, String)> {
    let server = GitServer::start(None).await?;
    server.create_repository(name)?;
    let clone_url = format!("file://{}", server.path_of(name).display());
    let function_id = stack.init(name).await?;
    let (status, body) = bind(
        stack,
        function_id,
        json!({
            "provider": provider.name(), "repository": format!("acme/{name}"),
            "clone_url": clone_url, "branch": "main", "subdirectory": "functions/hello",
            "secret": SECRET,
        }),
    )
    .await?;
    anyhow::ensure!(status == 201, "binding: {body}");
    Ok((function_id, server, clone_url))
}

/// Binds a new function `name` to `url`'s `subdirectory` through Gitea, delivers the push of
/// `(commit, committed_at)`, and checks that its deployment failed at once, without retries,
/// for `reason`; returns the function.
async fn failed_push(
    stack: &TestStack,
    name: &str,
    url: &str,
    subdirectory: &str,
    (commit, committed_at): (&str, &str),
    reason: &str,
) -> anyhow::Result<Uuid> {
    let function_id = stack.init(name).await?;
    let repository = format!("acme/{name}");
    let (status, body) = bind(
        stack,
        function_id,
        json!({
            "provider": "gitea", "repository": repository, "clone_url": url,
            "branch": "main", "subdirectory": subdirectory, "secret": SECRET,
        }),
    )
    .await?;
    anyhow::ensure!(status == 201, "{name}: {body}");
    let push = PushedCommit {
        repository: &repository,
        branch: "main",
        before: None,
        after: commit,
        committed_at,
    };
    let (_, body) = deliver_push(stack, Provider::Gitea, &push, name).await?;
    let log = stack
        .wait_settled(queued(&body)?, Duration::from_secs(60))
        .await?;
    anyhow::ensure!(log["status"] == "failed", "{name}: {log}");
    let error = log["error"].as_str().unwrap_or_default();
    anyhow::ensure!(error.contains(reason), "{name}: {error}");
    anyhow::ensure!(!error.contains("attempts"), "{name} was retried: {error}");
    Ok(function_id)
}

fn new_work_tree() -> anyhow::Result<tempfile::TempDir> {
    let work = tempfile::tempdir()?;
    git(work.path(), &["init", "--quiet", "--initial-branch=main"])?;
    Ok(work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_checked_per_provider_and_only_signed_new_pushes_queue_work()
-> anyhow::Result<()> {
    // No worker: the table is about what the api accepts and stores.
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await?;
    let sha = |c: char| c.to_string().repeat(40);
    for provider in [Provider::Github, Provider::Gitlab, Provider::Gitea] {
        let name = provider.name();
        let function_id = stack.init(&format!("hook-{name}")).await?;
        let repository = format!("acme/{name}-app");
        let (status, binding) = bind(
            &stack,
            function_id,
            json!({
                "provider": name, "repository": repository, "clone_url": "https://git.invalid/app.git",
                "branch": "main", "secret": SECRET,
            }),
        )
        .await?;
        assert_eq!(status, 201, "{binding}");
        assert!(binding.get("secret").is_none(), "the secret is write-only");
        assert_eq!(
            binding["webhook_path"],
            format!("/api/webhooks/{name}/{}", binding["id"].as_str().unwrap())
        );

        let push = PushedCommit {
            repository: &repository,
            branch: "main",
            before: None,
            after: &sha('a'),
            committed_at: "2026-11-23T10:00:00Z",
        };
        let before = counts(&stack).await?;

        // Refused deliveries store nothing.
        let (status, body) = send(
            &stack,
            provider,
            delivery(provider, "push", &push, "not-the-secret-at-all", "d-bad"),
        )
        .await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("signature_invalid")),
            "{provider:?}: {body}"
        );
        let (mut headers, body) = delivery(provider, "push", &push, SECRET, "d-unsigned");
        headers.retain(|(n, _)| !n.contains("signature") && !n.contains("token"));
        let (status, body) = send(&stack, provider, (headers, body)).await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("signature_required")),
            "{provider:?}: {body}"
        );
        let unknown = PushedCommit {
            repository: "acme/unknown",
            ..push
        };
        // No binding at that URL: the same answer as a wrong secret.
        let (status, body) = deliver_push(&stack, provider, &unknown, "d-unknown").await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("signature_invalid")),
            "{provider:?}: {body}"
        );
        let push = PushedCommit {
            repository: &repository,
            ..unknown
        };
        assert_eq!(
            counts(&stack).await?,
            before,
            "{provider:?}: refused deliveries stored something"
        );

        // A good push queues one deployment and one source job.
        let (status, body) = deliver_push(&stack, provider, &push, "d-1").await?;
        assert_eq!(status, 202, "{provider:?}: {body}");
        let deployments = body["deployments"].as_array().unwrap();
        assert_eq!(deployments.len(), 1, "{body}");
        assert_eq!(deployments[0]["function_id"], function_id.to_string());
        assert_eq!(deployments[0]["commit_sha"], sha('a'));
        let after_push = counts(&stack).await?;
        assert_eq!(
            after_push,
            (before.0 + 1, before.1 + 1, before.2 + 1),
            "{provider:?}"
        );

        // The provider redelivers: the first answer again, nothing new.
        let (status, again) = deliver_push(&stack, provider, &push, "d-1").await?;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["deployments"], body["deployments"]);
        assert_eq!(
            counts(&stack).await?,
            after_push,
            "{provider:?}: a redelivery queued work"
        );

        // Another event, and a push to an unbound branch, are acknowledged and ignored.
        let (status, ignored) = send(
            &stack,
            provider,
            delivery(provider, "issues", &push, SECRET, "d-issue"),
        )
        .await?;
        assert_eq!(status, 200, "{ignored}");
        assert_eq!(ignored["skipped"][0]["reason"], "event_not_handled");
        let other_branch = PushedCommit {
            branch: "feature",
            after: &sha('b'),
            ..push
        };
        let (status, ignored) = deliver_push(&stack, provider, &other_branch, "d-branch").await?;
        assert_eq!(status, 200, "{ignored}");
        assert_eq!(ignored["skipped"][0]["reason"], "branch_not_bound");
        let (deployments, _, jobs) = counts(&stack).await?;
        assert_eq!(
            (deployments, jobs),
            (after_push.0, after_push.2),
            "{provider:?}"
        );
    }

    // Secrets are stored sealed: nothing in the table reads as the secret.
    let stored: Vec<(String,)> = sqlx::query_as("SELECT secret_sealed FROM git_bindings")
        .fetch_all(&stack.pool)
        .await?;
    assert!(!stored.is_empty());
    assert!(
        stored
            .iter()
            .all(|(s,)| s.starts_with("v1:") && !s.contains(SECRET))
    );

    // Where the operator does not allow file URLs, a binding cannot name one; where it set no
    // key to seal secrets with, no binding can be made at all.
    fn strict(config: &mut slipway_shared::config::ApiConfig) {
        config.git_allow_file = false;
        config.secrets_key = None;
    }
    let strict = TestStack::start_with(StackOptions {
        workers: 0,
        api_overrides: Some(strict),
        ..Default::default()
    })
    .await?;
    let function_id = strict.init("no-file-urls").await?;
    let (status, body) = bind(
        &strict,
        function_id,
        json!({"provider": "github", "repository": "a/b", "clone_url": "file:///srv/git/b.git",
               "branch": "main", "secret": SECRET}),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SLIPWAY_GIT_ALLOW_FILE")
    );
    let (status, body) = bind(
        &strict,
        function_id,
        json!({"provider": "github", "repository": "a/b", "clone_url": "https://x/b.git",
               "branch": "main", "secret": SECRET}),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("secrets_key_missing"))
    );
    assert_eq!(strict.count("git_bindings").await?, 0);
    strict.shutdown().await?;

    // Bodies that are not a delivery: a clear 4xx in the error envelope, nothing stored. The
    // body is read only once the binding's secret checked out.
    let before = counts(&stack).await?;
    let github: Uuid =
        sqlx::query_scalar("SELECT id FROM git_bindings WHERE provider = 'github' LIMIT 1")
            .fetch_one(&stack.pool)
            .await?;
    let github_url = format!("/api/webhooks/github/{github}");
    let form = b"payload=%7B%7D".to_vec();
    let headers = vec![
        ("x-github-event".to_owned(), "push".to_owned()),
        ("x-github-delivery".to_owned(), "d-form".to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            format!("sha256={}", hmac_hex(SECRET, &form)),
        ),
    ];
    let (status, body) = send_to(&stack, &github_url, (headers.clone(), form)).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_payload")),
        "{body}"
    );
    let (status, body) = send_to(&stack, &github_url, (headers, vec![b' '; 6 << 20])).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("invalid_payload")),
        "{body}"
    );
    assert_eq!(counts(&stack).await?, before);

    // Bindings: listed without secrets, validated, deleted.
    let function_id = stack.init("hook-bindings").await?;
    for (bad, field) in [
        (
            json!({"provider": "bitbucket", "repository": "a/b", "clone_url": "https://x/y.git", "branch": "main", "secret": SECRET}),
            "provider",
        ),
        (
            json!({"provider": "github", "repository": "a/b", "clone_url": "ext::sh -c id", "branch": "main", "secret": SECRET}),
            "clone_url",
        ),
        (
            json!({"provider": "github", "repository": "a/b", "clone_url": "https://x/y.git", "branch": "a..b", "secret": SECRET}),
            "branch",
        ),
        (
            json!({"provider": "github", "repository": "a/b", "clone_url": "https://x/y.git", "branch": "main", "subdirectory": "../up", "secret": SECRET}),
            "subdirectory",
        ),
        (
            json!({"provider": "github", "repository": "a/b", "clone_url": "https://x/y.git", "branch": "main", "secret": "short"}),
            "secret",
        ),
    ] {
        let (status, body) = bind(&stack, function_id, bad).await?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_binding");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}"
        );
    }
    assert_eq!(stack.count("git_bindings").await?, 3);
    let good = json!({"provider": "gitea", "repository": "a/b", "clone_url": "https://x/y.git", "branch": "main", "secret": SECRET});
    let (_, binding) = bind(&stack, function_id, good.clone()).await?;
    let (status, body) = bind(&stack, function_id, good).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("binding_exists"))
    );
    let list: Value = stack
        .get(&format!("/api/functions/{function_id}/git-bindings"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["bindings"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(SECRET), "{list}");
    let path = format!(
        "/api/functions/{function_id}/git-bindings/{}",
        binding["id"].as_str().unwrap()
    );
    assert_eq!(stack.delete(&path).send().await?.status().as_u16(), 204);
    assert_eq!(stack.delete(&path).send().await?.status().as_u16(), 404);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_deploys_exactly_the_pushed_commit_and_records_it() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let server = GitServer::start(Some(("ci", "s3cret-token"))).await?;
    let clone_url = server.create_repository("app")?;
    let push_url = clone_url.replace("http://", "http://ci:s3cret-token@");
    let function_id = stack.init("from-git").await?;
    let (status, body) = bind(
        &stack,
        function_id,
        json!({
            "provider": "github", "repository": "acme/app", "clone_url": clone_url,
            "branch": "main", "subdirectory": "functions/hello", "secret": SECRET,
            "credentials": {"username": "ci", "password": "s3cret-token"},
        }),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["has_credentials"], true);

    let work = new_work_tree()?;
    let (first, first_at) = commit_hello(work.path(), "hello from git v1", "first version")?;
    // The branch moves on before the delivery arrives: the worker must still build `first`.
    let (_, _) = commit_hello(work.path(), "hello from git v2", "second version")?;
    git(work.path(), &["push", "--quiet", &push_url, "HEAD:main"])?;

    let push = PushedCommit {
        repository: "acme/app",
        branch: "main",
        before: None,
        after: &first,
        committed_at: &first_at,
    };
    let (status, body) =
        deliver_push(&stack, Provider::Github, &push, &Uuid::new_v4().to_string()).await?;
    assert_eq!(status, 202, "{body}");
    let deployment_id: Uuid = queued(&body)?;
    let log = stack.wait_active(deployment_id).await?;
    let phases: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["phase"].as_str())
        .collect();
    assert_eq!(phases.first(), Some(&"source"), "{log}");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "hello from git v1".into())
    );

    let history = stack.history(function_id).await?;
    let source = &history["deployments"][0]["source"];
    assert_eq!(source["type"], "git");
    assert_eq!(source["commit_sha"], first);
    assert_eq!(source["commit_message"], "first version");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_quick_pushes_only_the_newer_serves_and_late_deliveries_never_replace_it()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    // Gitea through file://: the other transport the worker speaks without credentials.
    let (function_id, _server, clone_url) =
        bound_over_file(&stack, Provider::Gitea, "quick").await?;

    let work = new_work_tree()?;
    let (v1, v1_at) = commit_hello(work.path(), "quick v1", "v1")?;
    git(work.path(), &["push", "--quiet", &clone_url, "HEAD:main"])?;
    let (v2, v2_at) = commit_hello(work.path(), "quick v2", "v2")?;
    git(work.path(), &["push", "--quiet", &clone_url, "HEAD:main"])?;
    let first = PushedCommit {
        repository: "acme/quick",
        branch: "main",
        before: None,
        after: &v1,
        committed_at: &v1_at,
    };
    let second = PushedCommit {
        before: Some(&v1),
        after: &v2,
        committed_at: &v2_at,
        ..first
    };
    let (s1, b1) = deliver_push(&stack, Provider::Gitea, &first, "quick-1").await?;
    let (s2, b2) = deliver_push(&stack, Provider::Gitea, &second, "quick-2").await?;
    assert_eq!((s1, s2), (202, 202), "{b1} {b2}");
    let older: Uuid = queued(&b1)?;
    let newer: Uuid = queued(&b2)?;

    stack.wait_active(newer).await?;
    let older_log = stack.wait_settled(older, Duration::from_secs(120)).await?;
    assert_eq!(older_log["status"], "superseded", "{older_log}");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "quick v2".into())
    );
    let history = stack.history(function_id).await?;
    let v1_row = &history["deployments"][1];
    assert_eq!(v1_row["superseded_by"], newer.to_string(), "{history}");

    // The older push delivered again, late, under a new id: it is older than what was accepted.
    let (status, late) = deliver_push(&stack, Provider::Gitea, &first, "quick-1-late").await?;
    assert_eq!(status, 200, "{late}");
    assert_eq!(
        late["skipped"][0]["reason"], "older_than_accepted",
        "{late}"
    );
    // The same for a commit that does not chain but is older by its time.
    let (v0, _) = {
        let other = new_work_tree()?;
        commit_hello(other.path(), "quick v0", "v0")?
    };
    let stale = PushedCommit {
        before: None,
        after: &v0,
        committed_at: "2020-01-01T00:00:00Z",
        ..first
    };
    let (status, late) = deliver_push(&stack, Provider::Gitea, &stale, "quick-0").await?;
    assert_eq!(status, 200, "{late}");
    assert_eq!(
        late["skipped"][0]["reason"], "older_than_accepted",
        "{late}"
    );
    assert_eq!(stack.history(function_id).await?["count"], 2);
    stack.shutdown().await
}

/// A `RUN` step that waits until the test releases it: BuildKit runs the step's processes on
/// this machine, so the test finds its `sleep` by its unique length and ends it; the step
/// then succeeds. Dropping it releases it too, so a failed test leaves no build behind.
struct HeldBuildStep {
    seconds: u64,
}

impl HeldBuildStep {
    fn new() -> Self {
        // Unique enough that no other process on the machine sleeps exactly this long.
        let seconds = 100_000 + u64::from(Uuid::new_v4().as_u128() as u32 % 800_000);
        Self { seconds }
    }

    fn run_line(&self) -> String {
        format!(
            "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep {} || true\"]",
            self.seconds
        )
    }

    /// The pids of the step's sleep.
    fn sleepers(&self) -> anyhow::Result<Vec<String>> {
        let wanted = format!("sleep\0{}\0", self.seconds);
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&wanted) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// Ends the step's sleep; fails if the step is not running.
    fn release(&self) -> anyhow::Result<()> {
        let pids = self.sleepers()?;
        anyhow::ensure!(!pids.is_empty(), "the held build step is not running");
        for pid in pids {
            std::process::Command::new("kill").arg(&pid).status()?;
        }
        Ok(())
    }
}

impl Drop for HeldBuildStep {
    fn drop(&mut self) {
        for pid in self.sleepers().unwrap_or_default() {
            std::process::Command::new("kill").arg(&pid).status().ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_finishes_after_a_newer_version_served_is_never_activated()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (function_id, _server, clone_url) =
        bound_over_file(&stack, Provider::Gitlab, "slow").await?;

    let work = new_work_tree()?;
    commit_hello(work.path(), "slow v1", "v1")?;
    // v1's build holds until the test releases it, after v2 serves: a sleep nobody else runs
    // (so BuildKit cannot answer it from its cache), ended by the test, which the step survives.
    let held = HeldBuildStep::new();
    let dockerfile = work.path().join("functions/hello/Dockerfile");
    let original = std::fs::read_to_string(&dockerfile)?;
    std::fs::write(
        &dockerfile,
        original.replace(
            "COPY www /www",
            &format!("{}\nCOPY www /www", held.run_line()),
        ),
    )?;
    git(work.path(), &["commit", "--quiet", "-am", "slow build"])?;
    let v1_slow = git(work.path(), &["rev-parse", "HEAD"])?;
    git(work.path(), &["push", "--quiet", &clone_url, "HEAD:main"])?;
    let slow_at = git(work.path(), &["log", "-1", "--format=%cI"])?;
    let slow = PushedCommit {
        repository: "acme/slow",
        branch: "main",
        before: None,
        after: &v1_slow,
        committed_at: &slow_at,
    };
    let (_, b1) = deliver_push(&stack, Provider::Gitlab, &slow, "slow-1").await?;
    let older: Uuid = queued(&b1)?;
    // Wait until its build really runs: a waiting push would simply be superseded.
    eventually(
        Duration::from_secs(60),
        "the slow build to start",
        || async {
            let history = stack.history(function_id).await?;
            let row = &history["deployments"][0];
            Ok((row["status"] == "building" && !row["build_started_at"].is_null()).then_some(()))
        },
    )
    .await?;

    std::fs::write(&dockerfile, original)?;
    std::fs::write(
        work.path().join("functions/hello/www/index.html"),
        "fast v2",
    )?;
    git(work.path(), &["commit", "--quiet", "-am", "fast build"])?;
    let v2 = git(work.path(), &["rev-parse", "HEAD"])?;
    let v2_at = git(work.path(), &["log", "-1", "--format=%cI"])?;
    git(work.path(), &["push", "--quiet", &clone_url, "HEAD:main"])?;
    let fast = PushedCommit {
        before: Some(&v1_slow),
        after: &v2,
        committed_at: &v2_at,
        ..slow
    };
    let (_, b2) = deliver_push(&stack, Provider::Gitlab, &fast, "slow-2").await?;
    assert_eq!(
        b2["deployments"][0]["superseded"], 0,
        "the running build is left to finish: {b2}"
    );
    let newer: Uuid = queued(&b2)?;

    stack.wait_active(newer).await?;
    held.release()?;
    let older_log = stack.wait_settled(older, Duration::from_secs(120)).await?;
    assert_eq!(older_log["status"], "superseded", "{older_log}");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "fast v2".into())
    );
    let function = stack.function(function_id).await?;
    assert_eq!(function["last_update_status"], "Successful", "{function}");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_ssh_is_fetched_with_the_bindings_key_and_a_wrong_key_or_host_fails_at_once()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let server = GitServer::start(None).await?;
    server.create_repository("ssh-app")?;
    let ssh = SshServer::start().await?;
    let clone_url = ssh.url_of(&server.path_of("ssh-app"));

    let work = new_work_tree()?;
    let (commit, committed_at) = commit_hello(work.path(), "hello over ssh", "over ssh")?;
    let path = server.path_of("ssh-app");
    git(
        work.path(),
        &["push", "--quiet", path.to_str().unwrap(), "HEAD:main"],
    )?;

    let key = ssh.client_key()?;
    let pinned = Some(ssh.known_hosts()?);
    let cases = [
        ("over-ssh", &key, None, Ok("hello over ssh")),
        ("pinned-host", &key, pinned, Ok("hello over ssh")),
        (
            "wrong-key",
            &ssh.stranger_key()?,
            None,
            Err("Permission denied"),
        ),
        (
            "wrong-host",
            &key,
            Some(ssh.wrong_known_hosts()?),
            Err("Host key verification failed"),
        ),
    ];
    for (name, key, known_hosts, outcome) in cases {
        let function_id = stack.init(name).await?;
        let repository = format!("acme/{name}");
        let (status, body) = bind(
            &stack,
            function_id,
            json!({
                "provider": "github", "repository": repository, "clone_url": clone_url,
                "branch": "main", "subdirectory": "functions/hello", "secret": SECRET,
                "credentials": {"ssh_key": key, "known_hosts": known_hosts},
            }),
        )
        .await?;
        assert_eq!(status, 201, "{body}");
        let push = PushedCommit {
            repository: &repository,
            branch: "main",
            before: None,
            after: &commit,
            committed_at: &committed_at,
        };
        let (status, body) =
            deliver_push(&stack, Provider::Github, &push, &Uuid::new_v4().to_string()).await?;
        assert_eq!(status, 202, "{body}");
        let deployment_id: Uuid = queued(&body)?;
        let log = stack
            .wait_settled(deployment_id, Duration::from_secs(120))
            .await?;
        match outcome {
            Ok(greeting) => {
                assert_eq!(log["status"], "active", "{name}: {log}");
                assert_eq!(stack.invoke(function_id, "").await?, (200, greeting.into()));
            }
            Err(reason) => {
                assert_eq!(log["status"], "failed", "{name}: {log}");
                let error = log["error"].as_str().unwrap_or_default();
                assert!(error.contains(reason), "{name}: {error}");
                // Refused by the server: not retried as if the network had failed.
                assert!(!error.contains("attempts"), "{name}: {error}");
            }
        }
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_cannot_be_deployed_fails_with_the_reason_and_is_not_retried()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        archive_limits: Some(slipway_shared::archive::ArchiveLimits {
            max_compressed_bytes: 4096,
            ..Default::default()
        }),
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let server = GitServer::start(None).await?;
    let clone_url = server.create_repository("broken")?;
    let work = new_work_tree()?;
    commit_hello(work.path(), "fine", "fine")?;
    let big = work.path().join("functions/big");
    std::fs::create_dir_all(&big)?;
    std::fs::copy(
        work.path().join("functions/hello/Dockerfile"),
        big.join("Dockerfile"),
    )?;
    // Random bytes do not compress: past the 4 KiB limit however gzip tries.
    let mut noise = Vec::new();
    for _ in 0..1024 {
        noise.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    std::fs::write(big.join("noise.bin"), noise)?;
    let bare = work.path().join("functions/no-dockerfile");
    std::fs::create_dir_all(&bare)?;
    std::fs::write(bare.join("README"), "no Dockerfile here\n")?;
    git(work.path(), &["add", "-A"])?;
    git(work.path(), &["commit", "--quiet", "-m", "broken ones"])?;
    let commit = git(work.path(), &["rev-parse", "HEAD"])?;
    let committed_at = git(work.path(), &["log", "-1", "--format=%cI"])?;
    git(work.path(), &["push", "--quiet", &clone_url, "HEAD:main"])?;
    let missing_repository = clone_url.replace("broken.git", "missing.git");

    for (name, url, subdirectory, reason) in [
        (
            "no-subdir",
            &clone_url,
            "functions/nope",
            "`functions/nope` is not a directory",
        ),
        (
            "too-big",
            &clone_url,
            "functions/big",
            "larger than the archive limit",
        ),
        (
            "no-dockerfile",
            &clone_url,
            "functions/no-dockerfile",
            "archive_missing_dockerfile",
        ),
        (
            "no-repo",
            &missing_repository,
            "functions/hello",
            "not found",
        ),
    ] {
        let pushed = (commit.as_str(), committed_at.as_str());
        let function_id = failed_push(&stack, name, url, subdirectory, pushed, reason).await?;
        let function = stack.function(function_id).await?;
        assert_eq!(function["state"], "Failed", "{name}: {function}");
    }
    // Nothing of theirs was stored.
    assert_eq!(std::fs::read_dir(stack.store_dir())?.count(), 0);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_urls_lead_to_no_internal_address_and_a_fetch_writes_a_bounded_amount()
-> anyhow::Result<()> {
    // The defaults of a shared platform: no internal network admitted, and a small fetch limit.
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(|config| {
            config.git_allow_networks = Vec::new();
            config.git_max_fetch_bytes = 64 * 1024;
        }),
        api_overrides: Some(|config| config.git_allow_networks = Vec::new()),
        ..Default::default()
    })
    .await?;
    let server = GitServer::start(None).await?;
    let clone_url = server.create_repository("internal")?;
    let port = clone_url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .context("the git server's port")?;

    // Internal addresses written out are refused when the binding is made.
    let function_id = stack.init("internal").await?;
    for url in [
        clone_url.clone(),
        format!("http://localhost:{port}/internal.git"),
        "https://[::1]/internal.git".to_owned(),
        "https://10.0.0.1/internal.git".to_owned(),
        "git@192.168.1.10:acme/internal.git".to_owned(),
    ] {
        let (status, body) = bind(
            &stack,
            function_id,
            json!({
                "provider": "gitea", "repository": "acme/internal", "clone_url": url,
                "branch": "main", "subdirectory": "functions/hello", "secret": SECRET,
            }),
        )
        .await?;
        assert_eq!(status, 400, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("loopback, private or link-local"),
            "{url}: {message}"
        );
    }

    // What only resolves to one (127.1 is 127.0.0.1 to the resolver) is refused at the fetch,
    // with Slipway's reason rather than git's; the server would have answered it.
    let work = new_work_tree()?;
    commit_hello(work.path(), "internal", "internal")?;
    let mut noise = Vec::new();
    for _ in 0..16 * 1024 {
        noise.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    std::fs::write(work.path().join("functions/hello/noise.bin"), noise)?;
    git(work.path(), &["add", "-A"])?;
    git(
        work.path(),
        &["commit", "--quiet", "-m", "with 256 KiB of noise"],
    )?;
    let commit = git(work.path(), &["rev-parse", "HEAD"])?;
    let committed_at = git(work.path(), &["log", "-1", "--format=%cI"])?;
    git(work.path(), &["push", "--quiet", &clone_url, "HEAD:main"])?;
    let file_url = format!("file://{}", server.path_of("internal").display());
    for (name, url, reason) in [
        (
            "shorthand",
            format!("http://127.1:{port}/internal.git"),
            "127.0.0.1 is a loopback, private or link-local address",
        ),
        (
            "too-large",
            file_url,
            "the repository is larger than the 65536 bytes a fetch may write",
        ),
    ] {
        let pushed = (commit.as_str(), committed_at.as_str());
        failed_push(&stack, name, &url, "functions/hello", pushed, reason).await?;
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_url_serves_its_binding_alone_and_delivery_ids_are_its_own() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await?;
    let repository = "acme/shared-name";
    let binding_of = |body: &Value| -> anyhow::Result<String> {
        Ok(body["webhook_path"]
            .as_str()
            .with_context(|| format!("no webhook_path: {body}"))?
            .to_owned())
    };
    let victim = stack.init("victim").await?;
    let (status, body) = bind(
        &stack,
        victim,
        json!({"provider": "github", "repository": repository,
               "clone_url": "https://git.invalid/app.git", "branch": "main", "secret": SECRET}),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let victim_url = binding_of(&body)?;

    // Another tenant binds the same repository name, with a secret of its own.
    let attacker_key = stack.add_tenant().await?;
    let response = stack
        .request_as(&attacker_key, reqwest::Method::POST, "/api/functions/init")
        .json(&json!({"name": "squatter", "skip_signing": true}))
        .send()
        .await?;
    let attacker_fn: Uuid = response.json::<Value>().await?["id"]
        .as_str()
        .context("id")?
        .parse()?;
    let attacker_secret = "the-attackers-own-secret";
    let response = stack
        .request_as(
            &attacker_key,
            reqwest::Method::POST,
            &format!("/api/functions/{attacker_fn}/git-bindings"),
        )
        .json(&json!({"provider": "github", "repository": repository,
                      "clone_url": "https://git.invalid/app.git", "branch": "main",
                      "secret": attacker_secret}))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let attacker_url = binding_of(&response.json().await?)?;

    let push = PushedCommit {
        repository,
        branch: "main",
        before: None,
        after: &"c".repeat(40),
        committed_at: "2026-11-23T10:00:00Z",
    };
    // The attacker squats the delivery id the provider will use for the victim's push.
    let squat = delivery(Provider::Github, "push", &push, attacker_secret, "d-42");
    let (status, body) = send_to(&stack, &attacker_url, squat).await?;
    assert_eq!(status, 202, "{body}");
    // The real delivery still counts, for the victim's function.
    let real = delivery(Provider::Github, "push", &push, SECRET, "d-42");
    let (status, body) = send_to(&stack, &victim_url, real).await?;
    assert_eq!(status, 202, "{body}");
    assert_ne!(body["duplicate"], true, "{body}");
    assert_eq!(body["deployments"][0]["function_id"], victim.to_string());

    // A URL serves its binding only; a missing binding and a wrong secret get the one answer.
    let refused = [
        (attacker_url.clone(), SECRET),
        (victim_url.clone(), attacker_secret),
        (format!("/api/webhooks/github/{}", Uuid::new_v4()), SECRET),
        ("/api/webhooks/github/not-a-binding".to_owned(), SECRET),
    ];
    let mut answers = Vec::new();
    for (url, secret) in refused {
        let (status, body) = send_to(
            &stack,
            &url,
            delivery(Provider::Github, "push", &push, secret, "d-43"),
        )
        .await?;
        answers.push((status, body));
    }
    let first = answers[0].clone();
    assert_eq!(first.0, 401, "{}", first.1);
    assert_eq!(first.1["error"]["code"], "signature_invalid");
    for answer in &answers {
        assert_eq!(*answer, first, "refusals must not differ");
    }

    // Bindings made now are not served at the shared URL, whose candidates nobody can add to.
    let shared = delivery(Provider::Github, "push", &push, SECRET, "d-44");
    let (status, body) = send_to(&stack, "/api/webhooks/github", shared.clone()).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("signature_invalid")),
        "{body}"
    );
    // A binding from before per-binding URLs still works there, its ids its own too.
    sqlx::query("UPDATE git_bindings SET shared_url = true WHERE function_id = $1")
        .bind(victim)
        .execute(&stack.pool)
        .await?;
    let newer = PushedCommit {
        before: Some(push.after),
        after: &"d".repeat(40),
        ..push
    };
    let legacy = delivery(Provider::Github, "push", &newer, SECRET, "d-45");
    let (status, body) = send_to(&stack, "/api/webhooks/github", legacy).await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deployments"][0]["function_id"], victim.to_string());
    stack.shutdown().await
}
