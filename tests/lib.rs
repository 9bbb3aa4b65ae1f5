//! The end-to-end harness: a whole Slipway stack per test, in-process (API on a loopback port,
//! one or more workers), on the real components the test script starts: Postgres, the Docker
//! engine with its BuildKit, the registry, and the S3 server.
//!
//! Each stack gets its own database, cloned from a template migrated once per test process, so
//! tests run in parallel without seeing each other; their functions each get a network of their
//! own on the engine, as anywhere.
// Stacks run the worker's job handlers in-process: their futures (apalis's service stack around
// them) nest deeper than the default limit of 128, as in `slipway-worker`.
#![recursion_limit = "256"]

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use slipway_shared::{
    config::{ApiConfig, WorkerConfig},
    db,
    domain::{ApiKey, SigningSecret},
    store::ArchiveStore,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use uuid::Uuid;

pub mod bench;
pub mod git_server;

/// A required environment variable; the test script sets them all. Missing ones fail the test
/// loudly: these tests never pass without the real components.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts Postgres, Docker, the registry and S3")
    })
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

static TEMPLATE: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);

fn database_url(base: &str, database: &str) -> String {
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    format!("{prefix}/{database}")
}

/// Creates (once per process) a migrated template database and returns its name.
async fn template(admin_url: &str) -> anyhow::Result<String> {
    let mut guard = TEMPLATE.lock().await;
    if let Some(name) = guard.as_ref() {
        return Ok(name.clone());
    }
    let name = format!("slipway_template_{}", std::process::id());
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
        .execute(&mut admin)
        .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let pool = PgPool::connect(&database_url(admin_url, &name)).await?;
    db::migrate(&pool).await?;
    pool.close().await;
    *guard = Some(name.clone());
    Ok(name)
}

pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = required_env("DATABASE_URL");
        let template = template(&admin_url).await?;
        Self::create_with(&admin_url, &format!("TEMPLATE {template}")).await
    }

    /// A migrated database on another server than `DATABASE_URL`'s.
    pub async fn create_on(admin_url: &str) -> anyhow::Result<Self> {
        let created = Self::create_with(admin_url, "").await?;
        let pool = PgPool::connect(&created.url).await?;
        db::migrate(&pool).await?;
        pool.close().await;
        Ok(created)
    }

    /// A database with no schema at all, for what must apply the migrations itself.
    pub async fn create_empty() -> anyhow::Result<Self> {
        Self::create_with(&required_env("DATABASE_URL"), "").await
    }

    /// `CREATE DATABASE <fresh name> <options>` on the server of `admin_url`.
    async fn create_with(admin_url: &str, options: &str) -> anyhow::Result<Self> {
        let name = format!("slipway_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name} {options}")))
            .execute(&mut admin)
            .await?;
        Ok(Self {
            url: database_url(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee, so the clean-up gets its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            }
        })
        .join()
        .ok();
    }
}

/// The dev stack's base image, the only one a test's Dockerfile may build `FROM` (besides
/// `scratch` and the tenant's own repositories), as the engine and the registry name it.
fn base_images(registry: &str) -> slipway_shared::dockerfile::BaseImageAllowList {
    slipway_shared::dockerfile::BaseImageAllowList::parse(&format!(
        "slipway/busybox:1,{registry}/slipway/busybox:1,{registry}/slipway/node:1,{registry}/slipway/python:1"
    ))
    .expect("the base image allow-list parses")
}

fn loopback() -> Vec<slipway_shared::git::Network> {
    slipway_shared::git::parse_networks("127.0.0.0/8").expect("a network")
}

/// The API reaches functions through one route into the engine's namespace
/// (scripts/lib/services.sh); without it every invocation would fail, so say that instead.
fn functions_are_routed() -> anyhow::Result<()> {
    let pool = required_env("SLIPWAY_RUNTIME_POOL");
    let output = std::process::Command::new("ip")
        .args(["-4", "route", "show", &pool])
        .output()?;
    let routes = String::from_utf8_lossy(&output.stdout);
    if !routes.contains(" via ") {
        bail!("no route to the functions' pool {pool}: run scripts/test.sh again to restore it");
    }
    Ok(())
}

/// Which archive store a stack uses.
pub enum StoreKind {
    Filesystem,
    /// The real S3-compatible server from the test script.
    S3,
}

pub struct TestStack {
    pub db: TestDb,
    pub pool: PgPool,
    pub store: Arc<ArchiveStore>,
    pub api: ApiClient,
    pub user_id: Uuid,
    pub registry: String,
    pub worker_config: WorkerConfig,
    /// `SLIPWAY_SECRETS_KEY` of the stack's api and workers.
    pub secrets_key: slipway_shared::secrets::SecretsKey,
    /// Whether the api has that key, and so checks v2 signatures (see `start_with`).
    signs_v2: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _store_dir: tempfile::TempDir,
}

/// A `worker_overrides` that runs functions on the swarm of `scripts/swarm.sh` (the test
/// script starts it and exports `SLIPWAY_SWARM_MANAGER`).
pub fn on_swarm(config: &mut WorkerConfig) {
    config.runtime = slipway_shared::config::RuntimeTarget::Swarm {
        manager: required_env("SLIPWAY_SWARM_MANAGER"),
    };
}

/// An `api_overrides` for a stack on the swarm: invocations wait for a lost instance to be
/// placed again, as `SLIPWAY_RUNTIME=swarm` makes the api do.
pub fn api_on_swarm(config: &mut ApiConfig) {
    config.unreachable_wait = Duration::from_secs(30);
}

pub struct StackOptions {
    pub store: StoreKind,
    pub workers: usize,
    pub archive_limits: Option<slipway_shared::archive::ArchiveLimits>,
    /// Changes to the workers' configuration, e.g. to point them at a dead BuildKit.
    pub worker_overrides: Option<fn(&mut WorkerConfig)>,
    /// Changes to the api's configuration.
    pub api_overrides: Option<fn(&mut ApiConfig)>,
    /// Another Postgres server than `DATABASE_URL`'s (its admin URL), e.g. one a test restarts.
    pub postgres_admin_url: Option<String>,
}

impl StackOptions {
    /// Functions on the swarm of `scripts/swarm.sh`.
    pub fn swarm() -> Self {
        Self {
            worker_overrides: Some(on_swarm),
            api_overrides: Some(api_on_swarm),
            ..Default::default()
        }
    }
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            store: StoreKind::S3,
            workers: 1,
            archive_limits: None,
            worker_overrides: None,
            api_overrides: None,
            postgres_admin_url: None,
        }
    }
}

impl TestStack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        slipway_shared::telemetry::init();
        functions_are_routed()?;
        let db = match &options.postgres_admin_url {
            Some(admin_url) => TestDb::create_on(admin_url).await?,
            None => TestDb::create().await?,
        };
        // Each worker holds one LISTEN connection per queue (ten) for as long as it runs, and a
        // stack may run several workers beside its api.
        let pool = PgPoolOptions::new()
            .max_connections(60)
            // As db::connect: a Postgres that is down is a 503 after this, not a hang.
            .acquire_timeout(Duration::from_secs(10))
            .connect(&db.url)
            .await?;
        let store_dir = tempfile::tempdir()?;
        let store = match options.store {
            StoreKind::Filesystem => {
                ArchiveStore::from_url(&format!("file://{}", store_dir.path().display()), None)
                    .await?
            }
            StoreKind::S3 => {
                let endpoint = required_env("SLIPWAY_TEST_S3_ENDPOINT");
                let bucket = required_env("SLIPWAY_TEST_S3_BUCKET");
                ArchiveStore::from_url(&format!("s3://{bucket}"), Some(&endpoint)).await?
            }
        };
        let store = Arc::new(store);

        // The api seals git secrets and signing secrets with it and the workers open them: one
        // key per stack.
        let secrets_key = slipway_shared::secrets::SecretsKey::generate()?;
        let key = ApiKey::generate();
        let secret = SigningSecret::generate();
        let (user_id, key_id) = {
            let mut conn = pool.acquire().await?;
            let user_id =
                db::users::ensure(&mut conn, &format!("user-{}", Uuid::new_v4().simple())).await?;
            let sealed = secret.seal(&secrets_key, key.prefix())?;
            let key_id = db::users::insert_api_key(&mut conn, user_id, &key, Some(&sealed)).await?;
            (user_id, key_id)
        };

        let registry = required_env("SLIPWAY_REGISTRY");
        let mut worker_config = WorkerConfig {
            docker_host: required_env("SLIPWAY_DOCKER_HOST"),
            runtime: slipway_shared::config::RuntimeTarget::Docker,
            buildkit: "docker".into(),
            registry: registry.clone(),
            registry_kind: slipway_shared::config::RegistryKind::Oci,
            ecr_endpoint: None,
            registry_login: registry_login(),
            insecure_registries: vec![registry.clone()],
            start_timeout: Duration::from_secs(20),
            drain: Duration::from_millis(500),
            concurrency: 4,
            heartbeat: Duration::from_secs(1),
            missed_heartbeats: 5,
            job_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(3),
            retry_attempts: 3,
            retry_base: Duration::from_millis(200),
            build_network_none: true,
            build_stall_timeout: Duration::from_secs(120),
            name: slipway_shared::config::unique_worker_name(),
            retained_versions: 10,
            name_reservation: Duration::from_secs(30 * 86_400),
            archive_limits: options.archive_limits.clone().unwrap_or_default(),
            // The webhook tests serve repositories from the test's own filesystem.
            git_allow_file: true,
            // The tests' git servers listen on loopback.
            git_allow_networks: loopback(),
            git_max_fetch_bytes: 64 * 1024 * 1024,
            secrets_key: Some(secrets_key.clone()),
            function_limits: Default::default(),
            build_base_images: base_images(&registry),
            build_slots_per_owner: 2,
        };
        if let Some(change) = options.worker_overrides {
            change(&mut worker_config);
        }
        let mut api_config = ApiConfig {
            bind: "127.0.0.1:0".parse()?,
            archive_limits: Default::default(),
            invoke_timeout: Duration::from_secs(30),
            deletion_grace: Duration::from_secs(7 * 86_400),
            record_events: true,
            ecr: None,
            registry_login: registry_login(),
            insecure_registries: vec![registry.clone()],
            wake_timeout: Duration::from_secs(30),
            invoke_domain: None,
            unreachable_wait: Duration::ZERO,
            max_concurrent_uploads: 4,
            max_queued_builds: 20,
            scheduler: Default::default(),
            signature_max_skew: Duration::from_secs(300),
            git_allow_file: true,
            git_allow_networks: loopback(),
            secrets_key: Some(secrets_key.clone()),
            function_limits: Default::default(),
            build_base_images: base_images(&registry),
            registry: Some(registry.clone()),
            runtime_images: Some(format!("{registry}/slipway")),
            event_stream: None,
        };
        if let Some(limits) = options.archive_limits {
            api_config.archive_limits = limits;
        }
        if let Some(change) = options.api_overrides {
            change(&mut api_config);
        }
        // An api without a secrets key can check no signing secret: the stack's key is then one
        // of the deprecated v1 scheme, as keys made before signing secrets are.
        let signs_v2 = api_config.secrets_key.is_some();
        if !signs_v2 {
            sqlx::query("UPDATE api_keys SET signing_secret = NULL WHERE id = $1")
                .bind(key_id)
                .execute(&pool)
                .await?;
        }

        let listener = tokio::net::TcpListener::bind(api_config.bind).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            rx.wait_for(|s| *s).await.ok();
        };
        let state = slipway_api::AppState::new(pool.clone(), Arc::clone(&store), api_config)?;
        let tasks = vec![tokio::spawn(slipway_api::serve(
            listener,
            state,
            wait(stopped.clone()),
        ))];
        let mut stack = Self {
            db,
            pool,
            store,
            api: {
                let api = ApiClient::new(&base_url, key.expose())?;
                if signs_v2 {
                    api.signing_with(key.expose(), key_id, secret.expose())
                } else {
                    api
                }
            },
            user_id,
            registry,
            worker_config,
            secrets_key,
            signs_v2,
            stop,
            tasks,
            _store_dir: store_dir,
        };
        for _ in 0..options.workers {
            let worker = stack.spawn_worker(|_| {})?;
            stack.tasks.push(worker);
        }
        stack.wait_healthy().await?;
        Ok(stack)
    }

    /// Starts one more worker process-equivalent (its own name, so its own lease identity) with
    /// the stack's worker configuration changed by `change`. Aborting the handle kills it the way
    /// a crash would: no goodbye, heartbeats just stop.
    pub fn spawn_worker(
        &self,
        change: fn(&mut WorkerConfig),
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        let mut config = self.worker_config.clone();
        config.name = slipway_shared::config::unique_worker_name();
        change(&mut config);
        let env =
            slipway_worker::Environment::new(self.pool.clone(), Arc::clone(&self.store), config)?;
        let mut stopped = self.stop.subscribe();
        Ok(tokio::spawn(slipway_worker::run(
            Arc::new(env),
            async move {
                stopped.wait_for(|s| *s).await.ok();
            },
        )))
    }

    /// Adds a worker the stack stops at shutdown.
    pub fn adopt(&mut self, worker: JoinHandle<anyhow::Result<()>>) {
        self.tasks.push(worker);
    }

    /// Another user of the same stack (another tenant), with a key of its own (and its signing
    /// secret, which `request_as` signs with).
    pub async fn add_tenant(&self) -> anyhow::Result<String> {
        let mut conn = self.pool.acquire().await?;
        let user_id =
            db::users::ensure(&mut conn, &format!("tenant-{}", Uuid::new_v4().simple())).await?;
        Ok(self.add_key(&mut conn, user_id).await?.expose().to_owned())
    }

    /// A new user with operator rights; its key.
    pub async fn add_operator(&self) -> anyhow::Result<ApiKey> {
        let mut conn = self.pool.acquire().await?;
        let operator =
            db::users::ensure(&mut conn, &format!("op-{}", Uuid::new_v4().simple())).await?;
        db::users::make_operator(&mut conn, operator).await?;
        self.add_key(&mut conn, operator).await
    }

    /// A new key of the user, with a signing secret the stack's client signs its requests with
    /// (a v1 key when the api has no secrets key).
    pub async fn add_key(&self, conn: &mut PgConnection, user_id: Uuid) -> anyhow::Result<ApiKey> {
        let key = ApiKey::generate();
        if !self.signs_v2 {
            db::users::insert_api_key(conn, user_id, &key, None).await?;
            return Ok(key);
        }
        let secret = SigningSecret::generate();
        let sealed = secret.seal(&self.secrets_key, key.prefix())?;
        let key_id = db::users::insert_api_key(conn, user_id, &key, Some(&sealed)).await?;
        self.api
            .remember_signer(key.expose(), key_id, secret.expose());
        Ok(key)
    }

    /// The filesystem store's directory (meaningless for an S3 stack).
    pub fn store_dir(&self) -> &Path {
        self._store_dir.path()
    }

    pub async fn conn(&self) -> anyhow::Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// Counts rows of a table, for "nothing was written" assertions.
    pub async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let sql = format!("SELECT count(*) FROM {table}");
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?)
    }

    /// Stops the stack and removes the containers its functions left running.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.send(true).ok();
        for task in self.tasks.drain(..) {
            task.await
                .context("a stack task panicked")?
                .context("a stack task ended with an error")?;
        }
        let functions: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM functions")
            .fetch_all(&self.pool)
            .await?;
        for function_id in functions {
            let label = format!("label=dev.slipway.function={function_id}");
            let containers = docker(&["ps", "-aq", "--filter", &label])?;
            for container in containers.lines() {
                // A release the worker started may be removing it at this very moment.
                if let Err(e) = docker(&["rm", "-f", container]) {
                    let message = format!("{e:#}");
                    anyhow::ensure!(
                        message.contains("No such container")
                            || message.contains("already in progress"),
                        "removing {container} of function {function_id}: {message}"
                    );
                }
            }
            let network = format!("slipway-fn-{}", function_id.simple());
            if let slipway_shared::config::RuntimeTarget::Swarm { manager } =
                &self.worker_config.runtime
            {
                swarm_remove_function(manager, &label, &network)?;
            }
            // Already gone when the test purged the function.
            docker(&["network", "rm", &network]).ok();
        }
        // `close` waits for every borrowed connection. A job the worker left running past its
        // shutdown grace still holds one for a while on a loaded machine; a test that never
        // gives one back must fail rather than hang.
        if tokio::time::timeout(Duration::from_secs(60), self.pool.close())
            .await
            .is_err()
        {
            anyhow::bail!("a pooled connection was still borrowed a minute after shutdown");
        }
        Ok(())
    }
}

/// Removes a function's services and overlay from the swarm (the overlay once its tasks have
/// stopped).
fn swarm_remove_function(manager: &str, label: &str, network: &str) -> anyhow::Result<()> {
    let swarm = |args: &[&str]| {
        std::process::Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(manager)
            .args(args)
            .output()
    };
    let listed = swarm(&["service", "ls", "-q", "--filter", label])?;
    for service in String::from_utf8(listed.stdout)?.lines() {
        swarm(&["service", "rm", service])?;
    }
    for _ in 0..50 {
        let removed = swarm(&["network", "rm", network])?;
        let stderr = String::from_utf8_lossy(&removed.stderr);
        if removed.status.success() || stderr.contains("not found") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Slipway's REST API as a client sees it: the harness's own stack (through [`TestStack`]'s
/// `Deref`), or a Slipway running elsewhere (the stack of deploy/swarm/stack.yml).
pub struct ApiClient {
    pub base_url: String,
    pub api_key: String,
    pub http: reqwest::Client,
    /// Key id and signing secret of the keys whose requests are signed v2; any other key signs
    /// the deprecated v1 way.
    signers: std::sync::Mutex<HashMap<String, Signer>>,
}

/// What signs a key's requests the v2 way.
#[derive(Clone)]
pub struct Signer {
    pub key_id: Uuid,
    pub secret: String,
}

impl ApiClient {
    pub fn new(base_url: &str, api_key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            http: reqwest::Client::builder().no_proxy().build()?,
            signers: Default::default(),
        })
    }

    /// Signs `key`'s requests with its signing secret (v2).
    pub fn signing_with(self, key: &str, key_id: Uuid, secret: &str) -> Self {
        self.remember_signer(key, key_id, secret);
        self
    }

    /// The key id and signing secret `key`'s requests are signed with, if it has them.
    pub fn signer_of(&self, key: &str) -> Option<Signer> {
        self.signers.lock().unwrap().get(key).cloned()
    }

    pub fn remember_signer(&self, key: &str, key_id: Uuid, secret: &str) {
        self.signers.lock().unwrap().insert(
            key.to_owned(),
            Signer {
                key_id,
                secret: secret.to_owned(),
            },
        );
    }

    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/healthz", self.base_url))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the API never became healthy");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.api_key)
    }

    /// A POST with the stack's key, signed when sent (see [`SignedRequest`]).
    pub fn post(&self, path: &str) -> SignedRequest {
        self.request(reqwest::Method::POST, path)
    }

    /// A DELETE with the stack's key, signed when sent.
    pub fn delete(&self, path: &str) -> SignedRequest {
        self.request(reqwest::Method::DELETE, path)
    }

    /// Any method with another key (see [`Self::add_tenant`]); mutating methods are signed.
    pub fn request_as(&self, key: &str, method: reqwest::Method, path: &str) -> SignedRequest {
        SignedRequest {
            sign: matches!(
                method,
                reqwest::Method::POST
                    | reqwest::Method::PUT
                    | reqwest::Method::PATCH
                    | reqwest::Method::DELETE
            ),
            builder: self.http.request(method, self.url(path)).bearer_auth(key),
            http: self.http.clone(),
            key: key.to_owned(),
            signer: self.signers.lock().unwrap().get(key).cloned(),
        }
    }

    /// Any method with the stack's key; mutating methods are signed when sent.
    pub fn request(&self, method: reqwest::Method, path: &str) -> SignedRequest {
        self.request_as(&self.api_key, method, path)
    }

    /// `POST /api/functions/init` with the default `skip_signing: false`; returns the function
    /// id.
    pub async fn init(&self, name: &str) -> anyhow::Result<Uuid> {
        self.init_with(name, false).await
    }

    /// `POST /api/functions/init`; returns the function id.
    pub async fn init_with(&self, name: &str, skip_signing: bool) -> anyhow::Result<Uuid> {
        let response = self
            .post("/api/functions/init")
            .json(&serde_json::json!({ "name": name, "skip_signing": skip_signing }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 201 {
            bail!("init answered {status}: {body}");
        }
        Ok(body["id"].as_str().context("id")?.parse()?)
    }

    /// `POST /api/functions/deploy`; returns the raw answer.
    pub async fn deploy_raw(
        &self,
        function_id: &str,
        archive: Vec<u8>,
        env: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut form = deploy_form(function_id, archive)?;
        if let Some(env) = env {
            form = form.text("env", env.to_owned());
        }
        let response = self
            .post("/api/functions/deploy")
            .multipart(form)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Deploys and returns (deployment id, version).
    pub async fn deploy(&self, function_id: Uuid, archive: Vec<u8>) -> anyhow::Result<(Uuid, i64)> {
        let (status, body) = self
            .deploy_raw(&function_id.to_string(), archive, None)
            .await?;
        if status != 202 {
            bail!("deploy answered {status}: {body}");
        }
        Ok((
            body["deployment_id"]
                .as_str()
                .context("deployment_id")?
                .parse()?,
            body["version"].as_i64().context("version")?,
        ))
    }

    /// Polls the deployment's log endpoint until it settles; returns the final log document.
    pub async fn wait_settled(
        &self,
        deployment_id: Uuid,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_settled_as(&self.api_key, deployment_id, timeout)
            .await
    }

    /// [`Self::wait_settled`] for a deployment of another tenant's (its key).
    pub async fn wait_settled_as(
        &self,
        key: &str,
        deployment_id: Uuid,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let body: Value = self
                .http
                .get(self.url(&format!("/api/deployments/{deployment_id}/logs")))
                .bearer_auth(key)
                .send()
                .await?
                .json()
                .await?;
            match body["status"].as_str() {
                Some("active" | "built" | "failed" | "inactive" | "superseded") => return Ok(body),
                _ if Instant::now() > deadline => {
                    bail!("deployment {deployment_id} did not settle within {timeout:?}: {body}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn wait_active(&self, deployment_id: Uuid) -> anyhow::Result<Value> {
        self.wait_active_as(&self.api_key, deployment_id).await
    }

    /// [`Self::wait_active`] for a deployment of another tenant's (its key).
    pub async fn wait_active_as(&self, key: &str, deployment_id: Uuid) -> anyhow::Result<Value> {
        let body = self
            .wait_settled_as(key, deployment_id, Duration::from_secs(180))
            .await?;
        if body["status"] != "active" {
            bail!(
                "deployment {deployment_id} settled as {}: {body}",
                body["status"]
            );
        }
        Ok(body)
    }

    pub async fn invoke(&self, function_id: Uuid, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .get(&format!("/api/v1/functions/invoke/{function_id}{path}"))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// `GET /api/functions/{id}/deployments` (first page, newest first).
    pub async fn history(&self, function_id: Uuid) -> anyhow::Result<Value> {
        Ok(self
            .get(&format!("/api/functions/{function_id}/deployments"))
            .send()
            .await?
            .json()
            .await?)
    }

    pub async fn function(&self, function_id: Uuid) -> anyhow::Result<Value> {
        Ok(self
            .get(&format!("/api/functions/{function_id}"))
            .send()
            .await?
            .json()
            .await?)
    }
}

impl std::ops::Deref for TestStack {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

/// A request that the harness signs at `send`, as a CI client would: a fresh timestamp and nonce
/// each time, over the exact bytes sent. `unsigned()` sends it as it is, for tests that make
/// their own signature headers (see [`signature_headers`]) or none.
pub struct SignedRequest {
    builder: reqwest::RequestBuilder,
    http: reqwest::Client,
    key: String,
    /// v2 when set: signed with the key's secret, sent without the key itself.
    signer: Option<Signer>,
    sign: bool,
}

impl SignedRequest {
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        reqwest::header::HeaderName: TryFrom<K>,
        <reqwest::header::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        reqwest::header::HeaderValue: TryFrom<V>,
        <reqwest::header::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|b| b.header(key, value))
    }

    pub fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|b| b.json(json))
    }

    pub fn body<T: Into<reqwest::Body>>(self, body: T) -> Self {
        self.map(|b| b.body(body))
    }

    pub fn multipart(self, form: reqwest::multipart::Form) -> Self {
        self.map(|b| b.multipart(form))
    }

    pub fn query<T: serde::Serialize + ?Sized>(self, query: &T) -> Self {
        self.map(|b| b.query(query))
    }

    /// Anything else `reqwest::RequestBuilder` offers.
    pub fn map(
        mut self,
        change: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Self {
        self.builder = change(self.builder);
        self
    }

    /// Sends the request without signature headers (unless the test adds its own).
    pub fn unsigned(mut self) -> Self {
        self.sign = false;
        self
    }

    pub async fn send(self) -> anyhow::Result<reqwest::Response> {
        let mut request = self.builder.build()?;
        if self.sign {
            // Multipart forms are streams; read them so the signed bytes are the sent bytes.
            let body = match request.body_mut().take() {
                Some(body) => http_body_util::BodyExt::collect(body).await?.to_bytes(),
                None => bytes::Bytes::new(),
            };
            let url = request.url();
            let path_and_query = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            let (method, timestamp, nonce) = (
                request.method().as_str().to_owned(),
                chrono::Utc::now().timestamp(),
                Uuid::new_v4().simple().to_string(),
            );
            let headers: Vec<(&str, String)> = match &self.signer {
                Some(signer) => {
                    // With the bearer key too (the API checks that both name the same key);
                    // the CLI's requests and the signing tests go without it.
                    signature_headers_v2(signer, &method, &path_and_query, &body, timestamp, &nonce)
                        .into()
                }
                None => signature_headers(
                    &self.key,
                    &method,
                    &path_and_query,
                    &body,
                    timestamp,
                    &nonce,
                )
                .into(),
            };
            for (name, value) in headers {
                request.headers_mut().insert(name, value.parse()?);
            }
            *request.body_mut() = Some(body.into());
        }
        Ok(self.http.execute(request).await?)
    }
}

/// The three signature headers for a request, computed independently of the API's code from the
/// README's rules: HMAC-SHA256 under the API key of
/// `METHOD\nPATH_AND_QUERY\nTIMESTAMP\nNONCE\nhex(sha256(body))`.
pub fn signature_headers(
    api_key: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> [(&'static str, String); 3] {
    let body_hash = hex::encode(Sha256::digest(body));
    let string_to_sign = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}");
    let mut mac = Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    [
        ("x-slipway-timestamp", timestamp.to_string()),
        ("x-slipway-nonce", nonce.to_owned()),
        (
            "x-slipway-signature",
            format!("v1={}", hex::encode(mac.finalize().into_bytes())),
        ),
    ]
}

/// The four v2 signature headers, computed independently of the API's code from the README's
/// rules: HMAC-SHA256 under the signing secret of `KEY_ID\n` followed by the v1 string to sign.
pub fn signature_headers_v2(
    signer: &Signer,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> [(&'static str, String); 4] {
    let body_hash = hex::encode(Sha256::digest(body));
    let string_to_sign = format!(
        "{}\n{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}",
        signer.key_id
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(signer.secret.as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    [
        ("x-slipway-key-id", signer.key_id.to_string()),
        ("x-slipway-timestamp", timestamp.to_string()),
        ("x-slipway-nonce", nonce.to_owned()),
        (
            "x-slipway-signature",
            format!("v2={}", hex::encode(mac.finalize().into_bytes())),
        ),
    ]
}

/// Packs a function directory into a tar.gz with `Dockerfile` at the root, replacing the files
/// named in `overrides` (path relative to the directory → new content).
pub fn pack_dir(dir: &Path, overrides: &BTreeMap<&str, &str>) -> anyhow::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    for relative in files {
        let path = dir.join(&relative);
        let key = relative.to_string_lossy().to_string();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path)?.permissions());
        let content = match overrides.get(key.as_str()) {
            Some(text) => text.as_bytes().to_vec(),
            None => std::fs::read(&path)?,
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode & 0o777);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, &key, content.as_slice())?;
    }
    for (key, text) in overrides {
        if !dir.join(key).exists() {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, key, text.as_bytes())?;
        }
    }
    Ok(builder.into_inner()?.finish()?)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// The example function the README uses, answering `greeting` on `/`.
/// The multipart form of `POST /api/functions/deploy`: the function and its archive (gzip);
/// add `env` and the other fields to it.
pub fn deploy_form(
    function_id: &str,
    archive: Vec<u8>,
) -> anyhow::Result<reqwest::multipart::Form> {
    Ok(reqwest::multipart::Form::new()
        .text("function_id", function_id.to_owned())
        .part(
            "archive",
            reqwest::multipart::Part::bytes(archive)
                .file_name("function.tar.gz")
                .mime_str("application/gzip")?,
        ))
}

pub fn hello_archive(greeting: &str) -> anyhow::Result<Vec<u8>> {
    let dir = repo_root().join("examples/hello");
    pack_dir(&dir, &BTreeMap::from([("www/index.html", greeting)]))
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The registry's login the test script made (`SLIPWAY_REGISTRY_USERNAME` / `_PASSWORD`).
pub fn registry_login() -> Option<slipway_shared::registry::RegistryLogin> {
    Some(slipway_shared::registry::RegistryLogin {
        username: std::env::var("SLIPWAY_REGISTRY_USERNAME").ok()?,
        password: std::env::var("SLIPWAY_REGISTRY_PASSWORD").ok()?.into(),
    })
}

/// A request to the registry behind Slipway's back, with the registry's login.
pub fn registry_request(method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new().request(method, url);
    match (
        std::env::var("SLIPWAY_REGISTRY_USERNAME"),
        std::env::var("SLIPWAY_REGISTRY_PASSWORD"),
    ) {
        (Ok(username), Ok(password)) => request.basic_auth(username, Some(password)),
        _ => request,
    }
}

/// The digest the registry serves for `registry/repo:tag`, read independently of Slipway.
pub async fn registry_digest(tagged: &str) -> anyhow::Result<Option<String>> {
    let (registry, rest) = tagged.split_once('/').context("registry")?;
    let (repository, tag) = rest.rsplit_once(':').context("tag")?;
    let response = registry_request(
        reqwest::Method::HEAD,
        &format!("http://{registry}/v2/{repository}/manifests/{tag}"),
    )
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await?;
    if response.status() == 404 {
        return Ok(None);
    }
    Ok(response
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap_or_default().to_owned()))
}

/// Runs `docker` (the engine's CLI) against the test engine.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let host = required_env("SLIPWAY_DOCKER_HOST");
    let mut command = std::process::Command::new("/usr/bin/docker");
    // The client config with the registry's login (scripts/lib/services.sh).
    if let Ok(config) = std::env::var("SLIPWAY_DOCKER_CONFIG") {
        command.arg("--config").arg(config);
    }
    let output = command.arg("-H").arg(&host).args(args).output()?;
    if !output.status.success() {
        bail!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Whether the registry still holds `digest` in the repository of `image_tag`
/// (`registry/repo:tag`), read independently of Slipway.
pub async fn registry_has_manifest(image_tag: &str, digest: &str) -> anyhow::Result<bool> {
    let (registry, rest) = image_tag.split_once('/').context("registry")?;
    let (repository, _tag) = rest.rsplit_once(':').context("tag")?;
    let response = registry_request(
        reqwest::Method::HEAD,
        &format!("http://{registry}/v2/{repository}/manifests/{digest}"),
    )
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await?;
    match response.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        other => bail!("HEAD {image_tag}@{digest}: {other}"),
    }
}

/// Every container of the function the engine has, running or not.
pub fn containers_of(function_id: Uuid) -> anyhow::Result<Vec<String>> {
    let filter = format!("label=dev.slipway.function={function_id}");
    Ok(docker(&["ps", "-aq", "--filter", &filter])?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Images of `registry/repo` (from an image tag) in the engine's store.
pub fn engine_images(image_tag: &str) -> anyhow::Result<Vec<String>> {
    let (name, _tag) = image_tag.rsplit_once(':').context("tag")?;
    let filter = format!("reference={name}");
    Ok(docker(&["images", "-q", "--filter", &filter])?
        .lines()
        .map(str::to_owned)
        .collect())
}
