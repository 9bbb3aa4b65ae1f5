//! BuildKit client: one Control API client (Solve with Status streamed as the build log) over two
//! transports, Docker's embedded BuildKit (HTTP-upgraded `/grpc` and `/session` on the engine's
//! unix socket) and a standalone buildkitd (`tcp://` or `unix://`, session over `Control/Session`).
//!
//! The build context never goes through FileSync: like `docker build - < context.tar`, the tar is
//! served by the session's `Upload` service and the Dockerfile frontend fetches it as
//! `context=http://buildkit-session/<id>`, detects the archive and unpacks it.

mod session;
mod solve;
mod transport;

use std::{
    collections::HashMap, error::Error as StdError, fmt, path::PathBuf, str::FromStr, sync::Arc,
};

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use tokio::sync::mpsc;
use tracing::{debug, info};

/// Where BuildKit's Control API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildkitAddr {
    /// Docker's embedded BuildKit, through the engine's unix socket (`docker+unix:///run/docker.sock`).
    /// Exports with `moby`: the image lands in the engine's image store, nothing is pushed.
    DockerEngine(PathBuf),
    /// A standalone buildkitd over plain TCP (`tcp://host:port`). Exports with `image`, `push=true`.
    Tcp(String),
    /// A standalone buildkitd on a unix socket (`unix:///run/buildkit/buildkitd.sock`).
    Unix(PathBuf),
}

impl BuildkitAddr {
    /// Docker's embedded BuildKit cannot push; a standalone buildkitd pushes while exporting.
    pub fn is_docker_engine(&self) -> bool {
        matches!(self, Self::DockerEngine(_))
    }
}

impl fmt::Display for BuildkitAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DockerEngine(path) => write!(f, "docker+unix://{}", path.display()),
            Self::Tcp(host_port) => write!(f, "tcp://{host_port}"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// A BuildKit address that is none of `docker+unix://`, `tcp://`, `unix://`.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid BuildKit address {0:?}: expected docker+unix:///path, tcp://host:port or unix:///path"
)]
pub struct AddrParseError(String);

impl FromStr for BuildkitAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || AddrParseError(s.to_owned());
        if let Some(path) = s.strip_prefix("docker+unix://") {
            if !path.starts_with('/') {
                return Err(invalid());
            }
            Ok(Self::DockerEngine(path.into()))
        } else if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid());
            }
            Ok(Self::Unix(path.into()))
        } else if let Some(host_port) = s.strip_prefix("tcp://") {
            let host_port = host_port.trim_end_matches('/');
            // An explicit port: buildkitd has no well-known one, and a typo'd default would only
            // surface as "connection refused" in every build.
            let valid = host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid || host_port.contains('/') {
                return Err(invalid());
            }
            Ok(Self::Tcp(host_port.to_owned()))
        } else {
            Err(invalid())
        }
    }
}

/// One image build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// An uncompressed or gzip tar with the `Dockerfile` at its root; streamed, never held in memory.
    pub context_tar: PathBuf,
    /// The image reference to name (and, with a standalone buildkitd, push) the result as.
    pub image_ref: String,
    /// Run `RUN` steps without a network (`force-network-mode=none`); needed with `dockerd --bridge=none`.
    pub network_none: bool,
    /// The owner the build's cache mounts belong to. The Dockerfile's ids are already scoped
    /// to it (`prepare_build_context`); BuildKit's own `BUILDKIT_CACHE_MOUNT_NS` prefixes them
    /// once more, so a rewrite that missed a mount still cannot share another owner's cache.
    pub cache_namespace: String,
    /// A build that reports no progress for this long is cancelled as BuildKit being
    /// unavailable (a solve can hang after a client died mid-build), so it is retried.
    pub stall_timeout: std::time::Duration,
}

/// What BuildKit reported for a successful build.
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    /// Docker engine only: the image ID (config digest) in the engine's store. NOT a manifest digest.
    pub image_id: Option<String>,
    /// Standalone buildkitd only: the manifest digest of the pushed image.
    pub pushed_manifest_digest: Option<String>,
    /// The exporter's raw response (`containerimage.digest`, `containerimage.config.digest`, ...).
    pub exporter_response: HashMap<String, String>,
}

/// Which kind of log line; the names match the `deployment_logs.stream` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// A step started, was cached, or finished.
    Step,
    Stdout,
    Stderr,
    /// A step failed.
    Error,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Error => "error",
        }
    }
}

/// One line of build log, in BuildKit's plain-progress style (`#3 [2/2] COPY hello.txt /`,
/// `#3 DONE 0.1s`, `#4 hello from RUN`), so it reads on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLogLine {
    /// The step (BuildKit vertex name) the line belongs to, if any.
    pub step: Option<String>,
    pub stream: LogStream,
    /// The full line, `#<n>` prefix included, no trailing newline.
    pub message: String,
}

impl BuildLogLine {
    /// `(stream, message)` as stored in `deployment_logs`.
    pub fn into_row(self) -> (String, String) {
        (self.stream.as_str().to_owned(), self.message)
    }
}

/// Why a build did not produce an image; decides whether the caller retries.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// BuildKit could not be reached or the connection broke mid-build: transient, retry with backoff.
    #[error("BuildKit is unavailable: {0}")]
    Unavailable(String),
    /// The build itself failed (bad Dockerfile, failing RUN, missing file): permanent.
    /// `message` is BuildKit's own text.
    #[error("{message}")]
    Failed { message: String },
    /// The context tar could not be read locally.
    #[error("cannot read the build context {path}: {source}")]
    Context {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// Whether retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Failed { .. })
    }
}

/// A BuildKit client; cheap to clone. Each build opens its own connections, so a restarted daemon
/// costs one failed attempt, not a poisoned client.
#[derive(Debug, Clone)]
pub struct BuildkitClient {
    addr: Arc<BuildkitAddr>,
}

impl BuildkitClient {
    pub fn new(addr: BuildkitAddr) -> Self {
        Self {
            addr: Arc::new(addr),
        }
    }

    pub fn addr(&self) -> &BuildkitAddr {
        &self.addr
    }

    /// Builds `request` and streams its log into `logs`, in order. Dropping the receiver only
    /// discards the log; dropping this future cancels the build in BuildKit.
    #[tracing::instrument(name = "buildkit_build", skip_all, fields(addr = %self.addr, image = %request.image_ref))]
    pub async fn build(
        &self,
        request: BuildRequest,
        logs: mpsc::Sender<BuildLogLine>,
    ) -> Result<BuildOutput, BuildError> {
        let started = std::time::Instant::now();
        // Fail before touching BuildKit: a missing context would otherwise surface as an opaque
        // HTTP-source error from inside the build.
        if let Err(source) = tokio::fs::File::open(&request.context_tar).await {
            return Err(BuildError::Context {
                path: request.context_tar.clone(),
                source,
            });
        }

        let session_id = new_id();
        let upload_id = new_id();
        let services = session::Services::new(HashMap::from([(
            format!("/{upload_id}"),
            request.context_tar.clone(),
        )]));

        let channel = transport::connect(&self.addr).await?;
        let control = ControlClient::new(channel)
            .max_decoding_message_size(solve::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(solve::MAX_MESSAGE_SIZE);

        let methods = session::Services::methods();
        let session = match &*self.addr {
            BuildkitAddr::DockerEngine(socket) => {
                let io = transport::docker_session(socket, &session_id, &methods).await?;
                services.serve(io)
            }
            BuildkitAddr::Tcp(_) | BuildkitAddr::Unix(_) => {
                let io = transport::control_session(control.clone(), &session_id, &methods).await?;
                services.serve(io)
            }
        };
        debug!(session_id, "session attached");

        let mut frontend_attrs = HashMap::from([
            ("filename".to_owned(), "Dockerfile".to_owned()),
            (
                "context".to_owned(),
                format!("http://buildkit-session/{upload_id}"),
            ),
        ]);
        if request.network_none {
            frontend_attrs.insert("force-network-mode".to_owned(), "none".to_owned());
        }
        frontend_attrs.insert(
            "build-arg:BUILDKIT_CACHE_MOUNT_NS".to_owned(),
            request.cache_namespace.clone(),
        );
        let (exporter, exporter_attrs) = match &*self.addr {
            BuildkitAddr::DockerEngine(_) => (
                "moby",
                HashMap::from([("name".to_owned(), request.image_ref.clone())]),
            ),
            BuildkitAddr::Tcp(_) | BuildkitAddr::Unix(_) => (
                "image",
                HashMap::from([
                    ("name".to_owned(), request.image_ref.clone()),
                    ("push".to_owned(), "true".to_owned()),
                ]),
            ),
        };

        let spec = solve::SolveSpec {
            session_id,
            exporter: exporter.to_owned(),
            exporter_attrs,
            frontend_attrs,
            stall_timeout: request.stall_timeout,
        };
        let result = solve::solve(control, spec, &session, logs).await;
        session.close().await;
        let exporter_response = result?;

        let digest = exporter_response.get("containerimage.digest").cloned();
        let (image_id, pushed_manifest_digest) = if self.addr.is_docker_engine() {
            (digest, None)
        } else {
            (
                exporter_response
                    .get("containerimage.config.digest")
                    .cloned(),
                digest,
            )
        };
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ?image_id,
            ?pushed_manifest_digest,
            "built"
        );
        Ok(BuildOutput {
            image_id,
            pushed_manifest_digest,
            exporter_response,
        })
    }
}

/// A random id for sessions, uploads and build refs (BuildKit only needs uniqueness).
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `err: cause: cause`, since tonic's and hyper's top-level messages alone ("transport error")
/// do not say what went wrong.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = match err.downcast_ref::<tonic::Status>() {
        // Status's Display is a debug dump; its message plus the code reads better in a log.
        Some(status) => format!("{} ({:?})", status.message(), status.code()),
        None => err.to_string(),
    };
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "docker+unix:///run/docker.sock"
                .parse::<BuildkitAddr>()
                .unwrap(),
            BuildkitAddr::DockerEngine("/run/docker.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:1234".parse::<BuildkitAddr>().unwrap(),
            BuildkitAddr::Tcp("127.0.0.1:1234".into())
        );
        assert_eq!(
            "tcp://buildkitd.internal:1234/"
                .parse::<BuildkitAddr>()
                .unwrap(),
            BuildkitAddr::Tcp("buildkitd.internal:1234".into())
        );
        assert_eq!(
            "unix:///run/buildkit/buildkitd.sock"
                .parse::<BuildkitAddr>()
                .unwrap(),
            BuildkitAddr::Unix("/run/buildkit/buildkitd.sock".into())
        );
        for bad in [
            "",
            "docker",
            "tcp://host",
            "tcp://:12",
            "unix://relative",
            "http://x:1",
            "tcp://h:99999",
        ] {
            assert!(bad.parse::<BuildkitAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_round_trip() {
        for s in [
            "docker+unix:///run/docker.sock",
            "tcp://127.0.0.1:1234",
            "unix:///run/b.sock",
        ] {
            assert_eq!(s.parse::<BuildkitAddr>().unwrap().to_string(), s);
        }
    }
}
