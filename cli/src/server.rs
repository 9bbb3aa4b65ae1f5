//! The operator commands (`dev`, `migrate`, `create-key`, `quota`, `purge`): they link the API,
//! the worker, the scheduler and the database, so they exist only in the full build (feature
//! `server`, on by default); the client is built without them.

use std::{path::Path, sync::Arc};

use anyhow::Context;
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

/// Runs one of [`crate::OPERATOR_COMMANDS`]; arguments of another shape get the usage, exit 2.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    // The client commands print their own lines; only the server's side logs.
    telemetry::init();
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
        _ => crate::usage_error(),
    }
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
