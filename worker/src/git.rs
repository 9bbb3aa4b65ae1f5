//! Fetching one pushed commit with the `git` CLI, and packing a directory of it as a deploy
//! archive. The CLI speaks every transport (https, ssh, file) with the credential handling users
//! already know; only what the worker asks of it is allowed:
//!
//! - no system or global configuration, no terminal prompts, no transports but
//!   [`allowed_protocols`] (never `ext::`, which runs commands; `file` only if allowed);
//! - credentials reach git through the environment (`GIT_CONFIG_*`, `GIT_SSH_COMMAND`), never
//!   the command line, where other users of the host could read them;
//! - a shallow fetch of exactly the pushed commit into a bare repository: no working tree is
//!   ever written, so nothing in the repository (hooks, symlinks, filters) runs or escapes;
//! - `git archive` of the commit's tree, validated afterwards like any upload;
//! - the server's name is resolved here and every address checked
//!   (`slipway_shared::git::check_destination`: no loopback, private or link-local address unless
//!   the operator allows it), then git is pinned to the checked address (`http.curloptResolve`,
//!   ssh's `HostName` with the name kept as `HostKeyAlias`), so a name cannot be re-pointed at
//!   the platform between the check and the connection;
//! - the fetch may write at most a given number of bytes (`prlimit --fsize`): a repository that
//!   is too large fails with that reason instead of filling the disk.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use std::net::IpAddr;

use base64::Engine;
use slipway_shared::git::{
    GitCredentials, Network, allowed_protocols, check_destination, clone_url_host,
};
use tokio::{io::AsyncReadExt, process::Command};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The repository, the commit or the credentials are wrong: trying again will not help.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached, or git failed in some other way.
    #[error("{0}")]
    Unavailable(String),
    /// The commit has no such directory.
    #[error("`{0}` is not a directory in the commit")]
    NoSuchDirectory(String),
}

/// A bare repository holding one fetched commit.
pub struct FetchedCommit {
    repo: PathBuf,
    home: PathBuf,
    sha: String,
    allow_file: bool,
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// git's messages for failures that are the binding's fault, not the network's.
const REFUSALS: [&str; 12] = [
    "not our ref",
    "couldn't find remote ref",
    "repository not found",
    // `fatal: repository 'https://…/' not found`
    "' not found",
    "returned error: 403",
    "returned error: 404",
    "authentication failed",
    "could not read username",
    "permission denied",
    "does not appear to be a git repository",
    "host key verification failed",
    "unable to find remote helper",
];

fn command(repo: &Path, home: &Path, allow_file: bool) -> Command {
    bounded_command(repo, home, allow_file, None)
}

/// git, writing no file larger than `max_bytes` if given (`prlimit`, which then execs git).
fn bounded_command(repo: &Path, home: &Path, allow_file: bool, max_bytes: Option<u64>) -> Command {
    let mut command = match max_bytes {
        Some(max) => {
            let mut prlimit = Command::new("prlimit");
            prlimit.arg(format!("--fsize={max}")).arg("--").arg("git");
            prlimit
        }
        None => Command::new("git"),
    };
    command
        .arg("-C")
        .arg(repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", allowed_protocols(allow_file))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command, what: &str) -> Result<Vec<u8>, GitError> {
    let output = tokio::time::timeout(FETCH_TIMEOUT, command.output())
        .await
        .map_err(|_| GitError::Unavailable(format!("{what} took longer than {FETCH_TIMEOUT:?}")))?
        .map_err(|e| GitError::Unavailable(format!("could not run git for {what}: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr)
        .replace("\r\n", "\n")
        .trim()
        .to_owned();
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&output.status) {
        stderr.push_str(&format!(" (killed by signal {signal})"));
    }
    let message = format!("{what} failed: {stderr}");
    let lowered = stderr.to_lowercase();
    if REFUSALS.iter().any(|r| lowered.contains(r)) {
        Err(GitError::Refused(message))
    } else {
        Err(GitError::Unavailable(message))
    }
}

/// Where a fetch may go: file URLs (only if allowed), and internal networks the operator
/// admitted; how much it may write.
pub struct FetchPolicy<'a> {
    pub allow_file: bool,
    pub allowed_networks: &'a [Network],
    pub max_bytes: u64,
}

/// The one address of the clone URL's host the fetch will connect to, after checking every
/// address the name resolves to: one internal address refuses the URL, whatever the others.
async fn checked_destination(
    url: &str,
    allowed: &[Network],
) -> Result<Option<(String, u16, IpAddr)>, GitError> {
    let Some((host, port)) = clone_url_host(url) else {
        return Ok(None);
    };
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| GitError::Unavailable(format!("resolving {host}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in &addresses {
        check_destination(*ip, allowed).map_err(|why| {
            GitError::Refused(format!("the clone URL's host {host} is refused: {why}"))
        })?;
    }
    let first = *addresses
        .first()
        .ok_or_else(|| GitError::Unavailable(format!("{host} resolves to no address")))?;
    Ok(Some((host, port, first)))
}

/// Fetches `sha` alone (depth 1) from `url` into a new bare repository under `workdir`.
pub async fn fetch_commit(
    workdir: &Path,
    url: &str,
    credentials: Option<&GitCredentials>,
    sha: &str,
    policy: &FetchPolicy<'_>,
) -> Result<FetchedCommit, GitError> {
    let allow_file = policy.allow_file;
    let destination = checked_destination(url, policy.allowed_networks).await?;
    let repo = workdir.join("repo.git");
    let home = workdir.join("home");
    // A retried fetch starts from nothing.
    if tokio::fs::try_exists(&repo).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&repo).await.ok();
        tokio::fs::remove_dir_all(&home).await.ok();
    }
    for dir in [&repo, &home] {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| GitError::Unavailable(format!("creating {}: {e}", dir.display())))?;
    }
    let mut init = command(&repo, &home, allow_file);
    init.args(["init", "--bare", "--quiet"]);
    run(init, "git init").await?;

    // Bounded: git (and its index-pack) may write no file larger than the limit.
    let mut fetch = bounded_command(&repo, &home, allow_file, Some(policy.max_bytes));
    fetch.args(["fetch", "--quiet", "--depth=1", "--no-tags", "--", url, sha]);
    let mut config: Vec<(&str, String)> = Vec::new();
    let mut ssh_pin = String::new();
    if let Some((host, port, ip)) = &destination {
        let address = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        config.push(("http.curloptResolve", format!("{host}:{port}:{address}")));
        // A name is connected to at the checked address; its host key is still looked up (and
        // pinned) under the name, as ssh writes it: `[name]:port` off port 22.
        if host.parse::<IpAddr>().is_err() {
            let alias = if *port == 22 {
                host.clone()
            } else {
                format!("[{host}]:{port}")
            };
            ssh_pin = format!(" -o HostName={ip} -o HostKeyAlias={alias}");
        }
    }
    match credentials {
        None => {}
        Some(GitCredentials::Login { username, password }) => {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            config.push(("http.extraHeader", format!("Authorization: Basic {basic}")));
        }
        Some(GitCredentials::SshKey {
            ssh_key,
            known_hosts: pinned,
        }) => {
            let key = home.join("id");
            write_private(&key, ssh_key).await?;
            let known_hosts = home.join("known_hosts");
            // Pinned host keys are checked strictly; without them the first key seen is
            // trusted, for this one fetch only.
            let checking = match pinned {
                Some(lines) => {
                    write_private(&known_hosts, lines).await?;
                    "yes"
                }
                None => "accept-new",
            };
            fetch.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR \
                     -o StrictHostKeyChecking={checking} -o UserKnownHostsFile='{}'{ssh_pin}",
                    key.display(),
                    known_hosts.display()
                ),
            );
        }
    }
    fetch.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (key, value)) in config.iter().enumerate() {
        fetch
            .env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    run(fetch, "fetching the commit")
        .await
        .map_err(|e| match e {
            // SIGXFSZ: index-pack "died of signal 25", or git itself killed by it.
            GitError::Unavailable(message) if message.contains("signal 25") => {
                GitError::Refused(format!(
                    "the repository is larger than the {} bytes a fetch may write",
                    policy.max_bytes
                ))
            }
            other => other,
        })?;
    let fetched = FetchedCommit {
        repo,
        home,
        sha: sha.to_owned(),
        allow_file,
    };
    // FETCH_HEAD names what the server sent; it must be the commit the push named.
    let head = fetched.rev_parse("FETCH_HEAD^{commit}").await?;
    if head != sha {
        return Err(GitError::Refused(format!(
            "the server sent {head} when asked for {sha}"
        )));
    }
    Ok(fetched)
}

impl FetchedCommit {
    async fn git(&self, args: &[&str], what: &str) -> Result<Vec<u8>, GitError> {
        let mut command = command(&self.repo, &self.home, self.allow_file);
        command.args(args);
        run(command, what).await
    }

    async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        let out = self
            .git(
                &["rev-parse", "--verify", "--quiet", rev],
                "resolving the commit",
            )
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The commit message, at most 4 KiB of it.
    pub async fn message(&self) -> Result<String, GitError> {
        let out = self
            .git(
                &["log", "-1", "--format=%B", &self.sha],
                "reading the commit message",
            )
            .await?;
        let mut message = String::from_utf8_lossy(&out).trim().to_owned();
        if message.len() > 4096 {
            let mut end = 4096;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Ok(message)
    }

    /// The commit's `subdirectory` (`""`: the whole tree) as a tar.gz, paths relative to it;
    /// refused once it grows past `max_bytes`, without holding more than that in memory.
    pub async fn archive(&self, subdirectory: &str, max_bytes: u64) -> Result<Vec<u8>, GitError> {
        let tree = if subdirectory.is_empty() {
            self.sha.clone()
        } else {
            format!("{}:{subdirectory}", self.sha)
        };
        let kind = self
            .git(&["cat-file", "-t", &tree], "looking up the subdirectory")
            .await
            .map_err(|_| GitError::NoSuchDirectory(subdirectory.to_owned()))?;
        let kind = String::from_utf8_lossy(&kind).trim().to_owned();
        if kind != "tree" && kind != "commit" {
            return Err(GitError::NoSuchDirectory(subdirectory.to_owned()));
        }
        let mut command = command(&self.repo, &self.home, self.allow_file);
        command
            .args(["archive", "--format=tar.gz", &tree])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| GitError::Unavailable(format!("could not run git archive: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut packed = Vec::new();
        stdout
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut packed)
            .await
            .map_err(|e| GitError::Unavailable(format!("reading git archive: {e}")))?;
        if packed.len() as u64 > max_bytes {
            // Dropping the child kills it.
            return Err(GitError::Refused(format!(
                "the packed directory is larger than the archive limit of {max_bytes} bytes"
            )));
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| GitError::Unavailable(format!("git archive: {e}")))?;
        if !output.status.success() {
            return Err(GitError::Unavailable(format!(
                "packing the commit failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(packed)
    }
}

async fn write_private(path: &Path, contents: &str) -> Result<(), GitError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut contents = contents.trim_end().to_owned();
    contents.push('\n');
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?
            .write_all(contents.as_bytes())
    })
    .await
    .map_err(|e| GitError::Unavailable(e.to_string()))?
    .map_err(|e| GitError::Unavailable(format!("writing the ssh key: {e}")))
}
