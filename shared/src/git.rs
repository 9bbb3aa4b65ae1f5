//! Git sources: which providers send pushes, and what a binding from a repository's branch to a
//! function may contain. Validated once, when the binding is made, so a push never finds a
//! binding that cannot be fetched for a reason it could have been refused for.

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitProvider {
    Github,
    Gitlab,
    Gitea,
}

impl GitProvider {
    pub const ALL: [Self; 3] = [Self::Github, Self::Gitlab, Self::Gitea];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }
}

impl fmt::Display for GitProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the worker authenticates its fetch: a login (or token) for http(s), a private key for ssh,
/// with the server's host key pinned in `known_hosts` lines (else the first key seen is trusted
/// for that one fetch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum GitCredentials {
    Login {
        username: String,
        password: String,
    },
    SshKey {
        ssh_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        known_hosts: Option<String>,
    },
}

/// How a clone URL reaches its repository; decides which credentials make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Ssh,
    File,
}

/// The transports the worker lets git use (`GIT_ALLOW_PROTOCOL`): never `ext::` or others that
/// run commands, and `file` only where the operator allows it (`SLIPWAY_GIT_ALLOW_FILE`): on a
/// shared worker a file URL would read whatever repository the host holds.
pub fn allowed_protocols(allow_file: bool) -> &'static str {
    if allow_file {
        "https:http:ssh:file"
    } else {
        "https:http:ssh"
    }
}

/// Refuses file URLs unless the operator allows them.
pub fn check_transport_allowed(
    transport: Transport,
    allow_file: bool,
) -> Result<(), InvalidBinding> {
    if transport == Transport::File && !allow_file {
        return Err(invalid(
            "clone_url",
            "file URLs are not allowed on this server (SLIPWAY_GIT_ALLOW_FILE)",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidBinding {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidBinding {
    InvalidBinding {
        field,
        message: message.into(),
    }
}

/// `https://`, `http://`, `ssh://`, `file://`, or scp-like `user@host:path`.
pub fn clone_url_transport(url: &str) -> Result<Transport, InvalidBinding> {
    let refuse = |why: &str| invalid("clone_url", why);
    if url.is_empty() || url.len() > 2048 {
        return Err(refuse("must be 1 to 2048 characters"));
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse(
            "must not start with '-' or contain spaces or control characters",
        ));
    }
    let transport = match url.split_once("://") {
        Some(("https" | "http", rest)) if !rest.is_empty() => Transport::Http,
        Some(("ssh", rest)) if !rest.is_empty() => Transport::Ssh,
        Some(("file", rest)) if rest.starts_with('/') => Transport::File,
        Some(_) => return Err(refuse("must be an https, http, ssh or file URL")),
        None => match url.split_once(':') {
            Some((host, path)) if host.contains('@') && !path.is_empty() && !host.contains('/') => {
                Transport::Ssh
            }
            _ => {
                return Err(refuse(
                    "must be an https, http, ssh or file URL, or user@host:path",
                ));
            }
        },
    };
    if transport == Transport::Http {
        let authority = url.split_once("://").map_or("", |(_, rest)| rest);
        let authority = authority.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(refuse(
                "must not embed credentials; pass them in `credentials`, which is never returned",
            ));
        }
    }
    Ok(transport)
}

/// An address range the operator lets git fetch from although it is not public
/// (`SLIPWAY_GIT_ALLOW_NETWORKS`, e.g. an internal Gitea): `address/prefix`, v4 or v6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (address, prefix) = raw.trim().split_once('/').unwrap_or((raw.trim(), ""));
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{raw:?} is not an address/prefix"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{raw:?} has no valid prefix length"))?
        };
        Ok(Self { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Comma-separated [`Network`]s.
pub fn parse_networks(raw: &str) -> Result<Vec<Network>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(Network::parse)
        .collect()
}

/// Not an address of the public internet: loopback, private, shared (CGNAT), link-local (the
/// cloud metadata address among them), unique-local, multicast, documentation, unspecified,
/// reserved; IPv4 inside IPv6 is judged as IPv4. A clone URL leading there would make the
/// worker fetch from the platform's own network on a tenant's behalf.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

/// Refuses `ip` if it is internal and no allowed network holds it.
pub fn check_destination(ip: IpAddr, allowed: &[Network]) -> Result<(), String> {
    if is_internal(ip) && !allowed.iter().any(|n| n.contains(ip)) {
        return Err(format!(
            "{ip} is a loopback, private or link-local address, which Slipway does not fetch from \
             (an operator may allow it with SLIPWAY_GIT_ALLOW_NETWORKS)"
        ));
    }
    Ok(())
}

/// The host and port a clone URL connects to (`None` for `file://`): brackets stripped from
/// IPv6, the transport's default port when none is given.
pub fn clone_url_host(url: &str) -> Option<(String, u16)> {
    let (authority, default_port) = match url.split_once("://") {
        Some(("https", rest)) => (rest.split('/').next()?, 443),
        Some(("http", rest)) => (rest.split('/').next()?, 80),
        Some(("ssh", rest)) => (rest.split('/').next()?, 22),
        Some(_) => return None,
        // scp-like user@host:path
        None => (url.split_once(':')?.0, 22),
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_owned(), port.unwrap_or(default_port)));
    }
    // An scp-like URL never has a port: its colon starts the path.
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if url.contains("://") => (host, port.parse().ok()),
        _ => (host_port, None),
    };
    Some((host.to_owned(), port.unwrap_or(default_port)))
}

/// At binding time: a clone URL naming an internal address outright (or `localhost`) is
/// refused; names are resolved and checked again at every fetch.
pub fn check_clone_url_host(url: &str, allowed: &[Network]) -> Result<(), InvalidBinding> {
    let Some((host, _)) = clone_url_host(url) else {
        return Ok(());
    };
    let refuse = |why: String| invalid("clone_url", why);
    let literal = if host.eq_ignore_ascii_case("localhost") {
        Some(IpAddr::from([127, 0, 0, 1]))
    } else {
        host.parse().ok()
    };
    match literal {
        Some(ip) => check_destination(ip, allowed).map_err(refuse),
        None => Ok(()),
    }
}

pub fn check_credentials(
    transport: Transport,
    credentials: Option<&GitCredentials>,
) -> Result<(), InvalidBinding> {
    match (transport, credentials) {
        (_, None)
        | (Transport::Http, Some(GitCredentials::Login { .. }))
        | (Transport::Ssh, Some(GitCredentials::SshKey { .. })) => Ok(()),
        (Transport::Http, Some(_)) => Err(invalid(
            "credentials",
            "an http(s) URL takes {\"username\", \"password\"}",
        )),
        (Transport::Ssh, Some(_)) => Err(invalid("credentials", "an ssh URL takes {\"ssh_key\"}")),
        (Transport::File, Some(_)) => Err(invalid("credentials", "a file URL takes none")),
    }
}

/// A branch name as `git check-ref-format --branch` would take it.
pub fn check_branch(branch: &str) -> Result<(), InvalidBinding> {
    let refuse = |why: &str| Err(invalid("branch", why));
    if branch.is_empty() || branch.len() > 255 {
        return refuse("must be 1 to 255 characters");
    }
    if branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("/.")
        || branch.contains("@{")
        || branch == "@"
        || branch
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        return refuse("is not a valid git branch name");
    }
    Ok(())
}

/// A path inside the repository, normalised without its trailing slash; `""` is the root.
pub fn normalize_subdirectory(subdirectory: &str) -> Result<String, InvalidBinding> {
    let trimmed = subdirectory.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.len() > 1024
        || trimmed.starts_with('/')
        || trimmed.contains('\\')
        || trimmed.chars().any(|c| c.is_control())
        || trimmed
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == ".." || part == ".git")
    {
        return Err(invalid(
            "subdirectory",
            "must be a relative path inside the repository, without '.', '..' or '.git'",
        ));
    }
    Ok(trimmed.to_owned())
}

/// The secret the provider signs deliveries with; GitLab sends it verbatim as a header.
pub fn check_secret(secret: &str) -> Result<(), InvalidBinding> {
    if !(16..=256).contains(&secret.len()) || !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "secret",
            "must be 16 to 256 printable ASCII characters, without spaces",
        ));
    }
    Ok(())
}

/// A repository as the provider names it in payloads (`owner/name`, `group/sub/project`).
pub fn check_repository(repository: &str) -> Result<(), InvalidBinding> {
    if repository.is_empty()
        || repository.len() > 256
        || repository.starts_with('/')
        || repository.ends_with('/')
        || repository
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(
            "repository",
            "must be the provider's full name of the repository, e.g. owner/name",
        ));
    }
    Ok(())
}

/// Where a binding's webhook secret is sealed, as the secret's associated data.
pub fn secret_context(binding_id: uuid::Uuid) -> String {
    format!("git_bindings.secret_sealed:{binding_id}")
}

/// Where a binding's clone credentials are sealed.
pub fn credentials_context(binding_id: uuid::Uuid) -> String {
    format!("git_bindings.credentials_sealed:{binding_id}")
}

/// A full commit id (SHA-1, or SHA-256 for repositories in that format).
pub fn is_commit_sha(raw: &str) -> bool {
    matches!(raw.len(), 40 | 64) && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls_by_transport() {
        for (url, transport) in [
            ("https://github.com/acme/app.git", Transport::Http),
            ("http://127.0.0.1:9418/app.git", Transport::Http),
            ("ssh://git@example.com/acme/app.git", Transport::Ssh),
            ("git@github.com:acme/app.git", Transport::Ssh),
            ("file:///srv/git/app.git", Transport::File),
        ] {
            assert_eq!(clone_url_transport(url), Ok(transport), "{url}");
        }
        for url in [
            "",
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "ftp://example.com/app.git",
            "https://user:token@github.com/acme/app.git",
            "/srv/git/app.git",
            "file://relative",
            "https://example.com/a b",
        ] {
            assert!(clone_url_transport(url).is_err(), "{url}");
        }
    }

    #[test]
    fn credentials_must_fit_the_transport() {
        let login = GitCredentials::Login {
            username: "ci".into(),
            password: "token".into(),
        };
        let key = GitCredentials::SshKey {
            ssh_key: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
            known_hosts: None,
        };
        assert!(check_credentials(Transport::Http, Some(&login)).is_ok());
        assert!(check_credentials(Transport::Ssh, Some(&key)).is_ok());
        assert!(check_credentials(Transport::File, None).is_ok());
        assert!(check_credentials(Transport::Http, Some(&key)).is_err());
        assert!(check_credentials(Transport::Ssh, Some(&login)).is_err());
        assert!(check_credentials(Transport::File, Some(&login)).is_err());
        let parsed: GitCredentials =
            serde_json::from_str(r#"{"username": "ci", "password": "token"}"#).unwrap();
        assert_eq!(parsed, login);
        assert!(serde_json::from_str::<GitCredentials>(r#"{"token": "x"}"#).is_err());
        let pinned: GitCredentials = serde_json::from_str(
            r#"{"ssh_key": "k", "known_hosts": "github.com ssh-ed25519 AAAA"}"#,
        )
        .unwrap();
        assert!(matches!(
            pinned,
            GitCredentials::SshKey {
                known_hosts: Some(_),
                ..
            }
        ));
        assert!(check_transport_allowed(Transport::File, false).is_err());
        assert!(check_transport_allowed(Transport::File, true).is_ok());
        assert!(check_transport_allowed(Transport::Http, false).is_ok());
        assert!(!allowed_protocols(false).contains("file"));
    }

    #[test]
    fn clone_urls_name_their_host_and_port() {
        for (url, expected) in [
            ("https://github.com/a/b.git", Some(("github.com", 443))),
            ("http://10.0.0.5:3000/a/b.git", Some(("10.0.0.5", 3000))),
            ("https://user@[::1]:8443/a", Some(("::1", 8443))),
            (
                "ssh://git@host.example:2222/a.git",
                Some(("host.example", 2222)),
            ),
            ("git@github.com:a/b.git", Some(("github.com", 22))),
            ("file:///srv/repo.git", None),
        ] {
            let got = clone_url_host(url);
            assert_eq!(
                got.as_ref().map(|(h, p)| (h.as_str(), *p)),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn internal_addresses_are_refused_unless_an_operator_allows_them() {
        let internal = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "192.0.2.2",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ];
        for ip in internal {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_internal(ip), "{ip}");
            assert!(check_destination(ip, &[]).is_err(), "{ip}");
        }
        for ip in ["140.82.112.3", "2606:4700::1111", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_internal(ip), "{ip}");
        }
        let allowed = parse_networks("10.1.0.0/16, ::1").unwrap();
        assert!(check_destination("10.1.2.3".parse().unwrap(), &allowed).is_ok());
        assert!(check_destination("10.2.0.1".parse().unwrap(), &allowed).is_err());
        assert!(check_destination("::1".parse().unwrap(), &allowed).is_ok());
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("nonsense").is_err());
        assert!(check_clone_url_host("http://localhost:3000/a.git", &[]).is_err());
        assert!(check_clone_url_host("https://[::1]/a.git", &[]).is_err());
        assert!(check_clone_url_host("https://github.com/a.git", &[]).is_ok());
    }

    #[test]
    fn branch_names() {
        for ok in ["main", "release/1.2", "feature-x", "v1"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-main", "a..b", "a b", "a~1", "x.lock", "a//b", "/main", "main/", "@", "a@{1}",
            "a:b", ".hidden",
        ] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdirectories_stay_inside_the_repository() {
        assert_eq!(normalize_subdirectory("").unwrap(), "");
        assert_eq!(normalize_subdirectory("/").unwrap(), "");
        assert_eq!(
            normalize_subdirectory("services/api/").unwrap(),
            "services/api"
        );
        for bad in ["../x", "a/../b", "/etc", "a//b", "./a", ".git", "a\\b"] {
            assert!(normalize_subdirectory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_and_shas() {
        assert!(check_secret("0123456789abcdef").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("0123456789 abcdef").is_err());
        assert!(is_commit_sha(&"a".repeat(40)));
        assert!(is_commit_sha(&"0".repeat(64)));
        assert!(!is_commit_sha(&"A".repeat(40)));
        assert!(!is_commit_sha("abc"));
    }
}
