//! What GitHub, GitLab and Gitea send on a push, and how each signs it. Pure: headers and bytes
//! in, verdicts out; the route decides what to answer.
//!
//! - GitHub: `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256: sha256=<hex HMAC>`.
//! - GitLab: `X-Gitlab-Event: Push Hook`, `Idempotency-Key` (stable across GitLab's retries;
//!   older GitLab sends only `X-Gitlab-Event-UUID`), `X-Gitlab-Token: <the secret itself>`.
//! - Gitea: `X-Gitea-Event`, `X-Gitea-Delivery`, `X-Gitea-Signature: <hex HMAC>`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use slipway_shared::git::{GitProvider, is_commit_sha};

type HmacSha256 = Hmac<Sha256>;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The event's name as the provider writes it.
pub fn event(provider: GitProvider, headers: &HeaderMap) -> Option<&str> {
    header(
        headers,
        match provider {
            GitProvider::Github => "x-github-event",
            GitProvider::Gitlab => "x-gitlab-event",
            GitProvider::Gitea => "x-gitea-event",
        },
    )
}

pub fn is_push(provider: GitProvider, event: &str) -> bool {
    match provider {
        GitProvider::Github | GitProvider::Gitea => event == "push",
        GitProvider::Gitlab => event == "Push Hook",
    }
}

/// The id a redelivery of the same event carries again.
pub fn delivery_id(provider: GitProvider, headers: &HeaderMap) -> Option<&str> {
    let id = match provider {
        GitProvider::Github => header(headers, "x-github-delivery"),
        GitProvider::Gitlab => {
            header(headers, "idempotency-key").or_else(|| header(headers, "x-gitlab-event-uuid"))
        }
        GitProvider::Gitea => header(headers, "x-gitea-delivery"),
    };
    id.filter(|id| id.len() <= 200)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProblem {
    /// The provider's signature header is absent.
    Missing,
    /// Present, but not in the provider's format.
    Malformed,
}

/// The signature (or token) the delivery carries, decoded once and checked against each
/// candidate binding's secret.
#[derive(Clone)]
pub enum Presented {
    Hmac(Vec<u8>),
    Token(String),
}

pub fn presented_signature(
    provider: GitProvider,
    headers: &HeaderMap,
) -> Result<Presented, SignatureProblem> {
    let hmac_hex = |name: &str, prefix: &str| {
        let raw = header(headers, name).ok_or(SignatureProblem::Missing)?;
        let hex_part = raw
            .strip_prefix(prefix)
            .ok_or(SignatureProblem::Malformed)?;
        let bytes = hex::decode(hex_part).map_err(|_| SignatureProblem::Malformed)?;
        if bytes.len() != 32 {
            return Err(SignatureProblem::Malformed);
        }
        Ok(Presented::Hmac(bytes))
    };
    match provider {
        GitProvider::Github => hmac_hex("x-hub-signature-256", "sha256="),
        GitProvider::Gitea => hmac_hex("x-gitea-signature", ""),
        GitProvider::Gitlab => header(headers, "x-gitlab-token")
            .map(|token| Presented::Token(token.to_owned()))
            .ok_or(SignatureProblem::Missing),
    }
}

/// Whether `secret` produced the presented signature over `body`, compared in constant time.
pub fn signed_with(presented: &Presented, body: &[u8], secret: &str) -> bool {
    match presented {
        Presented::Hmac(signature) => {
            let mut mac = keyed(secret.as_bytes());
            mac.update(body);
            mac.verify_slice(signature).is_ok()
        }
        // A MAC of both sides under one key turns the comparison into `verify_slice`'s constant
        // time one, whatever the lengths.
        Presented::Token(token) => {
            let mut expected = keyed(b"slipway gitlab token");
            expected.update(secret.as_bytes());
            let mut presented = keyed(b"slipway gitlab token");
            presented.update(token.as_bytes());
            presented
                .verify_slice(&expected.finalize().into_bytes())
                .is_ok()
        }
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

/// The repository the delivery is about, as bindings name it.
pub fn repository(provider: GitProvider, payload: &Value) -> Option<&str> {
    match provider {
        GitProvider::Github | GitProvider::Gitea => payload["repository"]["full_name"].as_str(),
        GitProvider::Gitlab => payload["project"]["path_with_namespace"].as_str(),
    }
}

/// What a push says, whichever provider sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `refs/heads/<branch>` for a branch, `refs/tags/…` for a tag.
    pub git_ref: String,
    /// The ref's new value; all zeros when the branch was deleted.
    pub after: String,
    /// The ref's value before the push; None for a new branch.
    pub before: Option<String>,
    /// The head commit's time, to order deliveries that do not chain.
    pub committed_at: Option<DateTime<Utc>>,
}

impl Push {
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }

    pub fn deletes_branch(&self) -> bool {
        self.after.bytes().all(|b| b == b'0')
    }
}

pub fn parse_push(provider: GitProvider, payload: &Value) -> Result<Push, String> {
    let text = |field: &str| {
        payload[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the push has no `{field}`"))
    };
    let git_ref = text("ref")?;
    let after = text("after")?;
    if !is_commit_sha(&after) {
        return Err(format!("`after` is not a commit id: {after:?}"));
    }
    let before = payload["before"]
        .as_str()
        .filter(|b| is_commit_sha(b) && !b.bytes().all(|c| c == b'0'))
        .map(str::to_owned);
    let head_timestamp = match provider {
        GitProvider::Github | GitProvider::Gitea => payload["head_commit"]["timestamp"].as_str(),
        GitProvider::Gitlab => payload["commits"].as_array().and_then(|commits| {
            commits
                .iter()
                .find(|c| c["id"].as_str() == Some(after.as_str()))
                .and_then(|c| c["timestamp"].as_str())
        }),
    };
    let committed_at = head_timestamp
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Push {
        git_ref,
        after,
        before,
        committed_at,
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "it-is-a-webhook-secret";

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn hmac_hex(secret: &str, body: &[u8]) -> String {
        let mut mac = keyed(secret.as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn github_signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = headers(&[(
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(SECRET, body)),
        )]);
        let presented = presented_signature(GitProvider::Github, &good)
            .ok()
            .unwrap();
        assert!(signed_with(&presented, body, SECRET));
        assert!(!signed_with(&presented, body, "another-secret-entirely"));
        assert!(!signed_with(&presented, b"{}", SECRET));
        let no_prefix = headers(&[("x-hub-signature-256", hmac_hex(SECRET, body))]);
        assert_eq!(
            presented_signature(GitProvider::Github, &no_prefix).err(),
            Some(SignatureProblem::Malformed)
        );
        assert_eq!(
            presented_signature(GitProvider::Github, &HeaderMap::new()).err(),
            Some(SignatureProblem::Missing)
        );
    }

    #[test]
    fn gitea_signatures_are_bare_hex() {
        let body = b"{}";
        let good = headers(&[("x-gitea-signature", hmac_hex(SECRET, body))]);
        let presented = presented_signature(GitProvider::Gitea, &good).ok().unwrap();
        assert!(signed_with(&presented, body, SECRET));
        let short = headers(&[("x-gitea-signature", "abcd".into())]);
        assert_eq!(
            presented_signature(GitProvider::Gitea, &short).err(),
            Some(SignatureProblem::Malformed)
        );
    }

    #[test]
    fn gitlab_tokens_are_the_secret_itself() {
        let good = headers(&[("x-gitlab-token", SECRET.into())]);
        let presented = presented_signature(GitProvider::Gitlab, &good)
            .ok()
            .unwrap();
        assert!(signed_with(&presented, b"anything", SECRET));
        let prefix = headers(&[("x-gitlab-token", SECRET[..10].into())]);
        let presented = presented_signature(GitProvider::Gitlab, &prefix)
            .ok()
            .unwrap();
        assert!(!signed_with(&presented, b"anything", SECRET));
    }

    #[test]
    fn gitlab_delivery_ids_prefer_the_idempotency_key() {
        let both = headers(&[
            ("idempotency-key", "retry-stable".into()),
            ("x-gitlab-event-uuid", "per-attempt".into()),
        ]);
        assert_eq!(
            delivery_id(GitProvider::Gitlab, &both),
            Some("retry-stable")
        );
        let old = headers(&[("x-gitlab-event-uuid", "per-event".into())]);
        assert_eq!(delivery_id(GitProvider::Gitlab, &old), Some("per-event"));
    }

    #[test]
    fn pushes_from_each_provider() {
        let after = "a".repeat(40);
        let before = "b".repeat(40);
        let github = json!({
            "ref": "refs/heads/main", "before": before, "after": after,
            "repository": {"full_name": "acme/app"},
            "head_commit": {"id": after, "timestamp": "2026-11-23T10:00:00+01:00"}
        });
        let push = parse_push(GitProvider::Github, &github).unwrap();
        assert_eq!(repository(GitProvider::Github, &github), Some("acme/app"));
        assert_eq!(push.branch(), Some("main"));
        assert_eq!(push.before.as_deref(), Some(before.as_str()));
        assert_eq!(
            push.committed_at.unwrap().to_rfc3339(),
            "2026-11-23T09:00:00+00:00"
        );

        let gitlab = json!({
            "object_kind": "push", "ref": "refs/heads/main",
            "before": "0".repeat(40), "after": after,
            "project": {"path_with_namespace": "group/sub/app"},
            "commits": [{"id": "c".repeat(40), "timestamp": "2026-11-23T08:00:00Z"},
                        {"id": after, "timestamp": "2026-11-23T09:30:00Z"}]
        });
        let push = parse_push(GitProvider::Gitlab, &gitlab).unwrap();
        assert_eq!(
            repository(GitProvider::Gitlab, &gitlab),
            Some("group/sub/app")
        );
        assert_eq!(push.before, None, "a new branch has no previous value");
        assert_eq!(
            push.committed_at.unwrap().to_rfc3339(),
            "2026-11-23T09:30:00+00:00"
        );

        let deletion = json!({"ref": "refs/heads/gone", "before": after, "after": "0".repeat(40)});
        assert!(
            parse_push(GitProvider::Gitea, &deletion)
                .unwrap()
                .deletes_branch()
        );
        assert!(parse_push(GitProvider::Github, &json!({"ref": "refs/heads/main"})).is_err());
        assert!(
            parse_push(
                GitProvider::Github,
                &json!({"ref": "refs/heads/main", "after": "HEAD"})
            )
            .is_err()
        );
    }
}
