//! A real git server on loopback for the webhook tests: git's own smart-HTTP CGI,
//! `git http-backend`, behind a small HTTP server, serving bare repositories from a temporary
//! directory, optionally behind basic auth. Tests push to it with the real `git` CLI, as a
//! developer would, and Slipway's worker fetches from it as it would from GitHub.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use base64::Engine;
use tokio::{io::AsyncWriteExt, process::Command, task::JoinHandle};

pub struct GitServer {
    root: tempfile::TempDir,
    base_url: String,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct Config {
    root: PathBuf,
    /// `Authorization` the server requires, if any.
    authorization: Option<String>,
}

impl GitServer {
    /// Serves `<root>/<name>.git` at `http://127.0.0.1:<port>/<name>.git`.
    pub async fn start(login: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let config = Config {
            root: root.path().to_owned(),
            authorization: login.map(|(user, password)| {
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {basic}")
            }),
        };
        let app = axum::Router::new().fallback(serve_cgi).with_state(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Ok(Self {
            root,
            base_url,
            server,
        })
    }

    /// A new bare repository that accepts pushes over HTTP.
    pub fn create_repository(&self, name: &str) -> anyhow::Result<String> {
        let path = self.root.path().join(format!("{name}.git"));
        git(
            self.root.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                path.to_str().unwrap(),
            ],
        )?;
        git(&path, &["config", "http.receivepack", "true"])?;
        Ok(format!("{}/{name}.git", self.base_url))
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Runs `git` in `dir` with a fixed identity and no user configuration; returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Slipway Tests")
        .env("GIT_AUTHOR_EMAIL", "tests@slipway.invalid")
        .env("GIT_COMMITTER_NAME", "Slipway Tests")
        .env("GIT_COMMITTER_EMAIL", "tests@slipway.invalid")
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !output.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

async fn serve_cgi(State(config): State<Config>, request: Request) -> Response {
    match run_backend(&config, request).await {
        Ok(response) => response,
        Err(e) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(format!("{e:#}")))
            .unwrap(),
    }
}

async fn run_backend(config: &Config, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    if let Some(expected) = &config.authorization {
        let presented = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if presented != Some(expected.as_str()) {
            return Ok(Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", "Basic realm=\"git\"")
                .body(Body::empty())?);
        }
    }
    let body: Bytes = axum::body::to_bytes(body, 64 * 1024 * 1024).await?;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "tests")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting git http-backend")?;
    let mut stdin = child.stdin.take().context("http-backend stdin")?;
    let writer = tokio::spawn(async move {
        stdin.write_all(&body).await.ok();
    });
    let output = child.wait_with_output().await?;
    writer.await.ok();
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)))
        .with_context(|| {
            format!(
                "http-backend wrote no headers: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let (head, rest) = raw.split_at(split.0);
    let content = rest[split.1..].to_vec();
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = StatusCode::from_u16(code.parse()?)?;
        } else {
            headers.append(
                axum::http::HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
    }
    let mut response = Response::builder().status(status);
    *response.headers_mut().context("response headers")? = headers;
    Ok(response.body(Body::from(content))?)
}

/// An sshd of the test's own on loopback that lets one key in as the current user, so the
/// worker fetches over ssh exactly as from a hosted provider: `ssh://user@127.0.0.1:port/path`.
pub struct SshServer {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    sshd: tokio::process::Child,
}

impl SshServer {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let keygen = |name: &str| -> anyhow::Result<()> {
            let path = dir.path().join(name);
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "slipway-tests", "-f"])
                .arg(&path)
                .status()
                .context("running ssh-keygen (openssh-client)")?;
            anyhow::ensure!(status.success(), "ssh-keygen failed");
            Ok(())
        };
        keygen("host_key")?;
        keygen("client_key")?;
        keygen("stranger_key")?;
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )?;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nLogLevel ERROR\n",
                dir = dir.path().display()
            ),
        )?;
        // Privilege separation needs its empty directory.
        std::fs::create_dir_all("/run/sshd").ok();
        let log_path = dir.path().join("sshd.log");
        let sshd = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-E")
            .arg(&log_path)
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting /usr/sbin/sshd (openssh-server)")?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "sshd did not listen on 127.0.0.1:{port}: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let user = String::from_utf8(std::process::Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_owned();
        Ok(Self {
            dir,
            port,
            user,
            sshd,
        })
    }

    /// The URL of a repository on this host's filesystem, reached over ssh.
    pub fn url_of(&self, repository: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repository.display()
        )
    }

    /// The private key sshd lets in.
    pub fn client_key(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("client_key"))?)
    }

    /// `known_hosts` lines that pin this server's host key.
    pub fn known_hosts(&self) -> anyhow::Result<String> {
        let public = std::fs::read_to_string(self.dir.path().join("host_key.pub"))?;
        Ok(format!("[127.0.0.1]:{} {}", self.port, public.trim()))
    }

    /// `known_hosts` lines that pin some other key for this server, as a MITM would present.
    pub fn wrong_known_hosts(&self) -> anyhow::Result<String> {
        let public = std::fs::read_to_string(self.dir.path().join("stranger_key.pub"))?;
        Ok(format!("[127.0.0.1]:{} {}", self.port, public.trim()))
    }

    /// A private key sshd does not know.
    pub fn stranger_key(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(
            self.dir.path().join("stranger_key"),
        )?)
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.sshd.start_kill().ok();
    }
}
