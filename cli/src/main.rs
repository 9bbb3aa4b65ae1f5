//! `slipway`: the client for pipelines and people (`client`), operator commands, and
//! `slipway dev`, the embedded default that runs the API, a worker and the scheduler in one
//! process against local services (see scripts/dev.sh).
// `slipway dev` runs the worker's job handlers: their futures (apalis's service stack around
// them) nest deeper than the default limit of 128, as in `slipway-worker`.
#![recursion_limit = "256"]

mod client;
mod pack;
mod progress;

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use slipway_shared::{
    config::{ApiConfig, DatabaseConfig, StoreConfig, WorkerConfig},
    db,
    domain::{ApiKey, ApiKeyHash, SigningSecret},
    jobs::{Job, PurgeJob},
    store::ArchiveStore,
    telemetry,
};
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::info;

const USAGE: &str = "usage: slipway <command>

client commands (SLIPWAY_URL and SLIPWAY_API_KEY, or `slipway login`; add --json for the API's JSON):
  login --url URL --key KEY [--key-id ID --signing-secret-env VAR]
                       remember the API, the key and (read from $VAR) its signing secret for the
                       commands below; without a signing secret requests are signed the
                       deprecated v1 way, which keys made before signing secrets still use
  init NAME [--skip-signing]
                       create a function (or find the one of that name)
  deploy DIR|ARCHIVE --function NAME|ID [--env-file FILE] [--wait]
                       pack DIR (.dockerignore respected) or upload ARCHIVE; --wait follows the
                       build log and exits 0 when the version is active, 1 when it failed
  status NAME|ID       state, serving version, tag and digest
  deployments NAME|ID  the version history
  rollback VERSION --function NAME|ID
  delete NAME|ID       schedule the function for deletion (grace period)
  cancel-delete NAME|ID
  git-bind NAME|ID --provider github|gitlab|gitea --repository OWNER/NAME --clone-url URL
           [--branch main] [--subdirectory DIR] --secret-env VAR
           [--username USER --password-env VAR | --ssh-key-file FILE [--known-hosts-file FILE]]
                       deploy the function on every push to the branch; secrets are read from
                       the environment and files, never from the command line
  git-bindings NAME|ID
  git-unbind BINDING --function NAME|ID
  logs DEPLOYMENT [--follow]
  invoke NAME|ID [--path PATH] [--data BODY]

operator commands (DATABASE_URL):
  dev                  migrate, then run the API, a worker and the scheduler in one process
  migrate              apply database migrations and exit
  create-key <user> [--operator]
                       create the user if needed and print a new API key for it, its id and its
                       signing secret (SLIPWAY_API_KEY=, SLIPWAY_KEY_ID=, SLIPWAY_SIGNING_SECRET=
                       lines, shown once); --operator
                       also lets the user list and fire the scheduler's sweeps
  quota <user> <n|default>
                       set the user's function quota, or go back to SLIPWAY_DEFAULT_FUNCTION_QUOTA
  purge <function-id>  purge a function scheduled for deletion now, without waiting for the end
                       of its grace period (the worker runs it; safe to repeat)

  --version            print the version

configuration comes from the environment; see README.md";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["dev"] => dev().await,
        ["migrate"] => {
            let pool = db::connect(&DatabaseConfig::from_env()?).await?;
            db::migrate(&pool).await
        }
        ["create-key", user, flags @ ..] if flags.iter().all(|f| *f == "--operator") => {
            let pool = db::connect(&DatabaseConfig::from_env()?).await?;
            let key = create_key(&pool, user, !flags.is_empty()).await?;
            print!("{}", key.env_lines());
            Ok(())
        }
        ["quota", user, quota] => {
            let quota = match *quota {
                "default" => None,
                n => Some(n.parse::<i32>().ok().filter(|n| *n >= 0).with_context(|| {
                    format!("{n:?} is not a quota (a whole number >= 0, or `default`)")
                })?),
            };
            let pool = db::connect(&DatabaseConfig::from_env()?).await?;
            let mut conn = pool.acquire().await?;
            let user_id = db::users::ensure(&mut conn, user).await?;
            db::users::set_function_quota(&mut conn, user_id, quota).await?;
            println!(
                "{user}: {}",
                quota.map_or("the default quota".to_owned(), |n| format!("{n} functions"))
            );
            Ok(())
        }
        ["purge", function_id] => {
            let function_id: uuid::Uuid = function_id
                .parse()
                .with_context(|| format!("{function_id:?} is not a function id"))?;
            let pool = db::connect(&DatabaseConfig::from_env()?).await?;
            purge(&pool, function_id).await
        }
        [command, ..] if CLIENT_COMMANDS.contains(command) => {
            let ok = client_command(&args).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        ["--version" | "version"] => {
            println!("slipway {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

const CLIENT_COMMANDS: [&str; 14] = [
    "login",
    "init",
    "deploy",
    "status",
    "deployments",
    "rollback",
    "delete",
    "cancel-delete",
    "logs",
    "invoke",
    "whoami",
    "git-bind",
    "git-bindings",
    "git-unbind",
];

/// Positional arguments and `--flag [value]`s; `--json`, `--wait`, `--follow`, `--skip-signing`
/// take no value.
struct Args {
    positional: Vec<String>,
    flags: std::collections::HashMap<String, Option<String>>,
}

impl Args {
    fn parse(raw: &[String]) -> anyhow::Result<Self> {
        const SWITCHES: [&str; 4] = ["json", "wait", "follow", "skip-signing"];
        let mut positional = Vec::new();
        let mut flags = std::collections::HashMap::new();
        let mut rest = raw.iter();
        while let Some(arg) = rest.next() {
            match arg.strip_prefix("--") {
                Some(name) if SWITCHES.contains(&name) => {
                    flags.insert(name.to_owned(), None);
                }
                Some(name) => {
                    let value = rest
                        .next()
                        .with_context(|| format!("--{name} needs a value"))?;
                    flags.insert(name.to_owned(), Some(value.clone()));
                }
                None => positional.push(arg.clone()),
            }
        }
        Ok(Self { positional, flags })
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.flags.get(name).and_then(|v| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    fn nth(&self, n: usize, what: &str) -> anyhow::Result<&str> {
        self.positional
            .get(n)
            .map(String::as_str)
            .with_context(|| format!("missing {what}; see `slipway help`"))
    }

    /// `--function X`, or the first argument after the command.
    fn function(&self) -> anyhow::Result<&str> {
        match self.value("function") {
            Some(f) => Ok(f),
            None => self.nth(1, "the function (NAME or ID)"),
        }
    }
}

/// Runs a client command; false when what it did failed (a failed deployment, say).
async fn client_command(raw: &[String]) -> anyhow::Result<bool> {
    let args = Args::parse(raw)?;
    let command = args.nth(0, "a command")?;
    if command == "login" {
        let url = args.value("url").context("--url is required")?;
        let key = args.value("key").context("--key is required")?;
        let signer = match (args.value("key-id"), args.value("signing-secret-env")) {
            (Some(id), Some(var)) => Some(client::Signer {
                key_id: id
                    .parse()
                    .with_context(|| format!("--key-id: {id:?} is not a key id"))?,
                secret: std::env::var(var)
                    .with_context(|| format!("--signing-secret-env: ${var} is not set"))?,
            }),
            (None, None) => None,
            _ => bail!("--key-id and --signing-secret-env go together"),
        };
        client::login(url, key, signer.as_ref())?;
        return Ok(true);
    }
    let client = client::Client::from_env(args.has("json"))?;
    match command {
        "init" => {
            client
                .init(args.nth(1, "NAME")?, args.has("skip-signing"))
                .await?
        }
        "deploy" => {
            let function = args.value("function").context("--function is required")?;
            let source = std::path::Path::new(args.nth(1, "DIR or ARCHIVE")?);
            let env_file = args.value("env-file").map(std::path::Path::new);
            return client
                .deploy(function, source, env_file, args.has("wait"))
                .await;
        }
        "status" | "whoami" => client.status(args.function()?).await?,
        "deployments" => client.deployments(args.function()?).await?,
        "rollback" => {
            let version = args
                .nth(1, "VERSION")?
                .parse()
                .context("VERSION must be a number")?;
            let function = args.value("function").context("--function is required")?;
            client.rollback(function, version).await?;
        }
        "delete" => client.delete(args.function()?).await?,
        "cancel-delete" => client.cancel_delete(args.function()?).await?,
        "logs" => {
            return client
                .logs(args.nth(1, "DEPLOYMENT")?, args.has("follow"))
                .await;
        }
        "invoke" => {
            client
                .invoke(
                    args.function()?,
                    args.value("path").unwrap_or(""),
                    args.value("data"),
                )
                .await?
        }
        "git-bind" => {
            client
                .git_bind(args.function()?, git_binding(&args)?)
                .await?
        }
        "git-bindings" => client.git_bindings(args.function()?).await?,
        "git-unbind" => {
            let function = args.value("function").context("--function is required")?;
            client.git_unbind(function, args.nth(1, "BINDING")?).await?
        }
        other => bail!("unknown command {other:?}"),
    }
    Ok(true)
}

/// The binding `git-bind` asks for. Secrets come from the environment or a file, so they never
/// appear in a process listing or a shell history.
fn git_binding(args: &Args) -> anyhow::Result<serde_json::Value> {
    let required = |name: &str| {
        args.value(name)
            .with_context(|| format!("--{name} is required"))
    };
    let from_env = |flag: &str| -> anyhow::Result<String> {
        let var = required(flag)?;
        std::env::var(var).with_context(|| format!("--{flag}: ${var} is not set"))
    };
    let credentials = match (args.value("username"), args.value("ssh-key-file")) {
        (Some(username), None) => Some(serde_json::json!({
            "username": username,
            "password": from_env("password-env")?,
        })),
        (None, Some(file)) => {
            let known_hosts = args
                .value("known-hosts-file")
                .map(|f| std::fs::read_to_string(f).with_context(|| format!("reading {f}")))
                .transpose()?;
            Some(serde_json::json!({
                "ssh_key": std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?,
                "known_hosts": known_hosts,
            }))
        }
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --username or --ssh-key-file, not both"),
    };
    let mut binding = serde_json::json!({
        "provider": required("provider")?,
        "repository": required("repository")?,
        "clone_url": required("clone-url")?,
        "branch": args.value("branch").unwrap_or("main"),
        "subdirectory": args.value("subdirectory").unwrap_or(""),
        "secret": from_env("secret-env")?,
    });
    if let Some(credentials) = credentials {
        binding["credentials"] = credentials;
    }
    Ok(binding)
}

/// A key as `create-key` and `slipway dev` hand it out: the bearer key, its id and the signing
/// secret its requests are signed with (README, "Signed requests").
struct IssuedKey {
    key: String,
    key_id: uuid::Uuid,
    signing_secret: String,
}

impl IssuedKey {
    /// `NAME=value` lines, for a shell to `source` or a pipeline to store as secrets.
    fn env_lines(&self) -> String {
        format!(
            "SLIPWAY_API_KEY={}\nSLIPWAY_KEY_ID={}\nSLIPWAY_SIGNING_SECRET={}\n",
            self.key, self.key_id, self.signing_secret
        )
    }

    fn from_env_lines(text: &str) -> Option<Self> {
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
        };
        Some(Self {
            key: value("SLIPWAY_API_KEY")?,
            key_id: value("SLIPWAY_KEY_ID")?.parse().ok()?,
            signing_secret: value("SLIPWAY_SIGNING_SECRET")?,
        })
    }
}

async fn create_key(pool: &PgPool, user: &str, operator: bool) -> anyhow::Result<IssuedKey> {
    let secrets_key = slipway_shared::config::secrets_key()?.context(
        "SLIPWAY_SECRETS_KEY (or _FILE) must be set: it seals the key's signing secret, as the api's does",
    )?;
    let mut tx = pool.begin().await?;
    let user_id = db::users::ensure(&mut tx, user).await?;
    if operator {
        db::users::make_operator(&mut tx, user_id).await?;
    }
    let key = ApiKey::generate();
    let secret = SigningSecret::generate();
    let sealed = secret
        .seal(&secrets_key, key.prefix())
        .map_err(|e| anyhow::anyhow!("sealing the signing secret: {e}"))?;
    let key_id = db::users::insert_api_key(&mut tx, user_id, &key, Some(&sealed)).await?;
    tx.commit().await?;
    Ok(IssuedKey {
        key: key.expose().to_owned(),
        key_id,
        signing_secret: secret.expose().to_owned(),
    })
}

/// Enqueues the purge if the function is scheduled for deletion; the job itself re-checks that.
async fn purge(pool: &PgPool, function_id: uuid::Uuid) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let deletion = db::deletions::open_for_function(&mut tx, function_id)
        .await?
        .with_context(|| format!("function {function_id} is not scheduled for deletion"))?;
    PurgeJob::Function {
        function_id,
        request_id: uuid::Uuid::new_v4(),
    }
    .enqueue(&mut tx)
    .await?;
    tx.commit().await?;
    println!(
        "purge of {} ({function_id}) enqueued; it was due {}",
        deletion.function_name, deletion.deletion_date
    );
    Ok(())
}

/// Reuses the key already written to the dev env file while it is still valid, so restarting
/// `slipway dev` does not invalidate a shell that sourced the file.
async fn dev_key(pool: &PgPool, env_file: Option<&Path>) -> anyhow::Result<IssuedKey> {
    if let Some(existing) = env_file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| IssuedKey::from_env_lines(&text))
    {
        let mut conn = pool.acquire().await?;
        if db::users::key_is_live(&mut conn, &ApiKeyHash::of(&existing.key)).await? {
            return Ok(existing);
        }
    }
    create_key(pool, "dev", true).await
}

async fn dev() -> anyhow::Result<()> {
    let api_config = ApiConfig::from_env()?;
    let worker_config = WorkerConfig::from_env()?;
    let store_config = StoreConfig::from_env()?;
    let pool = db::connect(&DatabaseConfig::from_env()?).await?;
    db::migrate(&pool).await?;
    let store = Arc::new(ArchiveStore::from_config(&store_config).await?);

    let env_file = std::env::var("SLIPWAY_DEV_ENV_FILE").ok();
    let key = dev_key(&pool, env_file.as_deref().map(Path::new)).await?;
    let url = format!("http://{}", api_config.bind);
    if let Some(file) = &env_file {
        let text = format!(
            "SLIPWAY_URL={url}\n{}SLIPWAY_REGISTRY={}\n",
            key.env_lines(),
            worker_config.registry
        );
        std::fs::write(file, text).with_context(|| format!("writing {file}"))?;
        info!(file, "wrote the dev environment; `source` it to use curl");
    }

    let listener = tokio::net::TcpListener::bind(api_config.bind)
        .await
        .with_context(|| format!("binding {}", api_config.bind))?;
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        rx.wait_for(|s| *s).await.ok();
    };
    let scheduler = slipway_scheduler::Scheduler::new(
        pool.clone(),
        api_config.scheduler.clone(),
        Arc::new(slipway_shared::schedule::SystemClock),
        slipway_shared::config::unique_worker_name(),
    )?;
    let state = slipway_api::AppState::new(pool.clone(), Arc::clone(&store), api_config)?;
    let api = tokio::spawn(slipway_api::serve(listener, state, wait(stopped.clone())));
    let worker_env = Arc::new(slipway_worker::Environment::new(
        pool,
        store,
        worker_config,
    )?);
    let worker = tokio::spawn(slipway_worker::run(worker_env, wait(stopped.clone())));
    let scheduler = tokio::spawn(async move { scheduler.run(wait(stopped)).await });
    info!(%url, "slipway dev is up");

    telemetry::shutdown_signal().await;
    info!("shutting down");
    stop.send(true).ok();
    let (api, worker, scheduler) = tokio::join!(api, worker, scheduler);
    api.context("api task")??;
    worker.context("worker task")??;
    scheduler.context("scheduler task")?;
    Ok(())
}
