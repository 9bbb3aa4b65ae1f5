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
//! - `git archive` of the commit's tree, validated afterwards like any upload.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine;
use slipway_shared::git::{GitCredentials, allowed_protocols};
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
    let mut command = Command::new("git");
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
    let stderr = String::from_utf8_lossy(&output.stderr)
        .replace("\r\n", "\n")
        .trim()
        .to_owned();
    let message = format!("{what} failed: {stderr}");
    let lowered = stderr.to_lowercase();
    if REFUSALS.iter().any(|r| lowered.contains(r)) {
        Err(GitError::Refused(message))
    } else {
        Err(GitError::Unavailable(message))
    }
}

/// Fetches `sha` alone (depth 1) from `url` into a new bare repository under `workdir`.
pub async fn fetch_commit(
    workdir: &Path,
    url: &str,
    credentials: Option<&GitCredentials>,
    sha: &str,
    allow_file: bool,
) -> Result<FetchedCommit, GitError> {
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

    let mut fetch = command(&repo, &home, allow_file);
    fetch.args(["fetch", "--quiet", "--depth=1", "--no-tags", "--", url, sha]);
    match credentials {
        None => {}
        Some(GitCredentials::Login { username, password }) => {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            fetch
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
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
                     -o StrictHostKeyChecking={checking} -o UserKnownHostsFile='{}'",
                    key.display(),
                    known_hosts.display()
                ),
            );
        }
    }
    run(fetch, "fetching the commit").await?;
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
