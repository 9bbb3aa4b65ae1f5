//! The client side of `slipway`, for pipelines and people: `login`, `init`, `deploy`, `status`,
//! `deployments`, `rollback`, `delete`, `cancel-delete`, `logs`, `invoke`. Every mutating
//! request is signed (functions that require signatures take it, the others ignore it) and
//! carries an `Idempotency-Key`, so a pipeline retrying a step cannot deploy twice. Output is
//! plain lines, or the API's JSON with `--json`; the exit code says whether it worked.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use slipway_shared::signing::{
    KEY_ID_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header,
    signature_header_v2, string_to_sign, string_to_sign_v2,
};
use uuid::Uuid;

use crate::progress::Progress;

/// What signs requests the v2 way: the key's id and its signing secret, which never travels.
pub struct Signer {
    pub key_id: Uuid,
    pub secret: String,
}

/// Where the API is and who we are: the environment wins over `slipway login`'s file.
pub struct Client {
    url: String,
    key: String,
    /// `None` for a key made before signing secrets: signed v1, with the key itself.
    signer: Option<Signer>,
    http: reqwest::Client,
    pub json: bool,
    progress: std::sync::Mutex<Progress>,
}

fn credentials_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("slipway").join("credentials")
}

/// `slipway login --url URL --key KEY [--key-id ID --signing-secret-env VAR]`: stores them for
/// later commands (mode 0600).
pub fn login(url: &str, key: &str, signer: Option<&Signer>) -> anyhow::Result<()> {
    let file = credentials_file();
    std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode_0600()
        .open(&file)
        .with_context(|| format!("writing {}", file.display()))?;
    writeln!(out, "SLIPWAY_URL={url}\nSLIPWAY_API_KEY={key}")?;
    if let Some(signer) = signer {
        writeln!(
            out,
            "SLIPWAY_KEY_ID={}\nSLIPWAY_SIGNING_SECRET={}",
            signer.key_id, signer.secret
        )?;
    }
    println!("credentials stored in {}", file.display());
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

impl Client {
    pub fn from_env(json: bool) -> anyhow::Result<Self> {
        let stored: BTreeMap<String, String> = std::fs::read_to_string(credentials_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let optional = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| stored.get(name).cloned())
        };
        let setting = |name: &str| {
            optional(name)
                .with_context(|| format!("{name} is not set; run `slipway login` or export it"))
        };
        let signer = match (
            optional("SLIPWAY_KEY_ID"),
            optional("SLIPWAY_SIGNING_SECRET"),
        ) {
            (Some(id), Some(secret)) => Some(Signer {
                key_id: id
                    .parse()
                    .with_context(|| format!("SLIPWAY_KEY_ID={id:?} is not a key id"))?,
                secret,
            }),
            (None, None) => None,
            _ => bail!("set both SLIPWAY_KEY_ID and SLIPWAY_SIGNING_SECRET, or neither"),
        };
        Ok(Self {
            url: setting("SLIPWAY_URL")?.trim_end_matches('/').to_owned(),
            key: setting("SLIPWAY_API_KEY")?,
            signer,
            http: reqwest::Client::builder().no_proxy().build()?,
            json,
            progress: std::sync::Mutex::new(Progress::detect(json)),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// Signs `body` for `method path` and sends it with an idempotency key.
    async fn send_signed(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        idempotency_key: &str,
        upload: bool,
    ) -> anyhow::Result<reqwest::Response> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)?
            .as_secs()
            .to_string();
        let nonce = Uuid::new_v4().simple().to_string();
        let signed = string_to_sign(method.as_str(), path, &timestamp, &nonce, &body);
        let body = if upload {
            self.progress().upload_body(body)
        } else {
            body.into()
        };
        let url = format!("{}{path}", self.url);
        // v2 requests name the key by id and carry no bearer key: captured whole, they hold
        // nothing that could sign another request.
        let request = match &self.signer {
            Some(signer) => self
                .http
                .request(method, url)
                .header(KEY_ID_HEADER, signer.key_id.to_string())
                .header(
                    SIGNATURE_HEADER,
                    signature_header_v2(&signer.secret, &string_to_sign_v2(signer.key_id, &signed)),
                ),
            None => self
                .request(method, path)
                .header(SIGNATURE_HEADER, signature_header(&self.key, &signed)),
        };
        let mut request = request
            .header(TIMESTAMP_HEADER, timestamp)
            .header(NONCE_HEADER, nonce)
            .header("idempotency-key", idempotency_key)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Ok(request.send().await?)
    }

    async fn mutate(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let bytes = serde_json::to_vec(&body)?;
        let key = Uuid::new_v4().to_string();
        let response = self
            .send_signed(method, path, Some("application/json"), bytes, &key, false)
            .await?;
        answer(response).await
    }

    async fn read(&self, path: &str) -> anyhow::Result<Value> {
        answer(self.request(reqwest::Method::GET, path).send().await?).await
    }

    /// A function by id, or by name among the caller's functions.
    pub async fn resolve(&self, function: &str) -> anyhow::Result<String> {
        if Uuid::parse_str(function).is_ok() {
            return Ok(function.to_owned());
        }
        let listed = self.read("/api/functions").await?;
        listed["functions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == function)
            .and_then(|f| f["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("you have no function named {function:?}"))
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn print(&self, value: &Value, plain: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", plain(value));
        }
    }

    pub async fn init(&self, name: &str, skip_signing: bool) -> anyhow::Result<()> {
        let body = json!({"name": name, "skip_signing": skip_signing});
        let created = self
            .mutate(reqwest::Method::POST, "/api/functions/init", body)
            .await?;
        self.print(&created, |f| {
            format!(
                "{} {}",
                f["id"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or("")
            )
        });
        Ok(())
    }

    /// Packs `source` (a directory, `.dockerignore` respected, or a ready tar.gz), uploads it
    /// and, with `wait`, follows the build log until the deployment settles.
    pub async fn deploy(
        &self,
        function: &str,
        source: &Path,
        env_file: Option<&Path>,
        wait: bool,
    ) -> anyhow::Result<bool> {
        let function_id = self.resolve(function).await?;
        let archive = if source.is_dir() {
            crate::pack::pack_dir(source)?
        } else {
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?
        };
        let env = match env_file {
            Some(file) => Some(crate::pack::read_env_file(file)?),
            None => None,
        };
        let boundary = format!("slipway-{}", Uuid::new_v4().simple());
        let body = multipart(&boundary, &function_id, &archive, env.as_ref())?;
        // Derived from what is uploaded: a pipeline re-running this step with the same code
        // gets the first answer back instead of a second deployment.
        let key = format!(
            "deploy-{function_id}-{}",
            hex_sha256(&archive, env.as_ref())
        );
        let response = self
            .send_signed(
                reqwest::Method::POST,
                "/api/functions/deploy",
                Some(&format!("multipart/form-data; boundary={boundary}")),
                body,
                &key,
                true,
            )
            .await?;
        let accepted = answer(response).await?;
        let deployment = accepted["deployment_id"]
            .as_str()
            .context("no deployment_id in the answer")?
            .to_owned();
        if !self.json {
            eprintln!(
                "version {} accepted: deployment {deployment}",
                accepted["version"]
            );
        }
        if !wait {
            self.print(&accepted, |a| {
                a["deployment_id"].as_str().unwrap_or("").to_owned()
            });
            return Ok(true);
        }
        self.follow(&deployment).await
    }

    /// Prints the deployment's log as it happens; true when it ends active.
    pub async fn follow(&self, deployment: &str) -> anyhow::Result<bool> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/api/deployments/{deployment}/logs?follow=true"),
            )
            .send()
            .await?;
        if !response.status().is_success() {
            answer(response).await?;
            bail!("the log could not be followed");
        }
        let mut buffer = String::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let event = field(&block, "event:");
                let data: Value =
                    serde_json::from_str(&field(&block, "data:")).unwrap_or(Value::Null);
                match event.as_str() {
                    "line" if self.json => println!("{data}"),
                    "line" => {
                        let phase = data["phase"].as_str().unwrap_or("");
                        let message = data["message"].as_str().unwrap_or("");
                        if !self.progress().log_line(phase, message) {
                            println!("{phase:<8} {message}");
                        }
                    }
                    "end" => {
                        self.progress().close_phase();
                        self.print(&data, |d| match d["error"].as_str() {
                            Some(error) => {
                                format!("{}: {error}", d["status"].as_str().unwrap_or(""))
                            }
                            None => d["status"].as_str().unwrap_or("").to_owned(),
                        });
                        return Ok(data["status"] == "active");
                    }
                    _ => {}
                }
            }
        }
        bail!("the log stream ended before the deployment settled")
    }

    pub async fn status(&self, function: &str) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let f = self.read(&format!("/api/functions/{id}")).await?;
        self.print(&f, |f| {
            format!(
                "{} {} status={} state={} last_update={} version={} image={}@{}",
                f["name"].as_str().unwrap_or(""),
                f["id"].as_str().unwrap_or(""),
                f["status"].as_str().unwrap_or(""),
                f["state"].as_str().unwrap_or(""),
                f["last_update_status"].as_str().unwrap_or("-"),
                f["active_version"],
                f["image_tag"].as_str().unwrap_or("-"),
                f["image_digest"].as_str().unwrap_or("-"),
            )
        });
        Ok(())
    }

    pub async fn deployments(&self, function: &str) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let history = self
            .read(&format!("/api/functions/{id}/deployments"))
            .await?;
        self.print(&history, |h| {
            h["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let commit = d["source"]["commit_sha"]
                        .as_str()
                        .map_or(String::new(), |c| format!(" {}", &c[..c.len().min(12)]));
                    format!(
                        "v{:<4} {:<10} {} {}{commit}",
                        d["version"],
                        d["status"].as_str().unwrap_or(""),
                        d["uuid"].as_str().unwrap_or(""),
                        d["image_digest"].as_str().unwrap_or("-")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        Ok(())
    }

    /// Binds a repository's branch to the function; prints the binding and the webhook URL to
    /// give the provider.
    pub async fn git_bind(&self, function: &str, binding: Value) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let created = self
            .mutate(
                reqwest::Method::POST,
                &format!("/api/functions/{id}/git-bindings"),
                binding,
            )
            .await?;
        let url = &self.url;
        self.print(&created, |b| {
            format!(
                "{} bound {} {}@{} — point its push webhook at {url}{} with the same secret",
                b["id"].as_str().unwrap_or(""),
                b["provider"].as_str().unwrap_or(""),
                b["repository"].as_str().unwrap_or(""),
                b["branch"].as_str().unwrap_or(""),
                b["webhook_path"].as_str().unwrap_or("")
            )
        });
        Ok(())
    }

    pub async fn git_bindings(&self, function: &str) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let list = self
            .read(&format!("/api/functions/{id}/git-bindings"))
            .await?;
        self.print(&list, |l| {
            l["bindings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    format!(
                        "{} {:<6} {} {} /{}",
                        b["id"].as_str().unwrap_or(""),
                        b["provider"].as_str().unwrap_or(""),
                        b["repository"].as_str().unwrap_or(""),
                        b["branch"].as_str().unwrap_or(""),
                        b["subdirectory"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        Ok(())
    }

    pub async fn git_unbind(&self, function: &str, binding: &str) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        self.mutate(
            reqwest::Method::DELETE,
            &format!("/api/functions/{id}/git-bindings/{binding}"),
            json!({}),
        )
        .await?;
        self.print(&json!({"deleted": binding}), |_| {
            format!("{binding} unbound")
        });
        Ok(())
    }

    pub async fn rollback(&self, function: &str, version: i64) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let accepted = self
            .mutate(
                reqwest::Method::POST,
                &format!("/api/functions/{id}/rollback"),
                json!({"version": version}),
            )
            .await?;
        self.print(&accepted, |a| {
            format!("rollback to version {} accepted", a["target_version"])
        });
        Ok(())
    }

    pub async fn delete(&self, function: &str) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let scheduled = self
            .mutate(
                reqwest::Method::DELETE,
                &format!("/api/functions/{id}"),
                json!({}),
            )
            .await?;
        self.print(&scheduled, |s| {
            format!(
                "scheduled for deletion on {} ({} days)",
                s["deletion_info"]["deletion_date"].as_str().unwrap_or(""),
                s["deletion_info"]["days_remaining"]
            )
        });
        Ok(())
    }

    pub async fn cancel_delete(&self, function: &str) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let restored = self
            .mutate(
                reqwest::Method::POST,
                &format!("/api/functions/{id}/cancel-deletion"),
                json!({}),
            )
            .await?;
        self.print(&restored, |r| {
            r["message"].as_str().unwrap_or("").to_owned()
        });
        Ok(())
    }

    pub async fn logs(&self, deployment: &str, follow: bool) -> anyhow::Result<bool> {
        if follow {
            return self.follow(deployment).await;
        }
        let log = self
            .read(&format!("/api/deployments/{deployment}/logs"))
            .await?;
        self.print(&log, |l| {
            l["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|line| {
                    format!(
                        "{:<8} {}",
                        line["phase"].as_str().unwrap_or(""),
                        line["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        Ok(log["status"] != "failed")
    }

    /// Prints the function's answer body as it is; fails on a 4xx or 5xx.
    pub async fn invoke(
        &self,
        function: &str,
        path: &str,
        data: Option<&str>,
    ) -> anyhow::Result<()> {
        let id = self.resolve(function).await?;
        let path = match path.trim_start_matches('/') {
            "" => format!("/api/v1/functions/invoke/{id}"),
            rest => format!("/api/v1/functions/invoke/{id}/{rest}"),
        };
        let request = match data {
            Some(data) => self
                .request(reqwest::Method::POST, &path)
                .body(data.to_owned()),
            None => self.request(reqwest::Method::GET, &path),
        };
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        std::io::stdout().write_all(&body)?;
        if !status.is_success() {
            bail!("the invocation answered {status}");
        }
        Ok(())
    }
}

/// The API's answer, or its error envelope as the error.
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    bail!(
        "{status}: {} ({})",
        body["error"]["message"].as_str().unwrap_or("no message"),
        body["error"]["code"].as_str().unwrap_or("no code")
    )
}

fn field(block: &str, name: &str) -> String {
    block
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("")
}

fn hex_sha256(archive: &[u8], env: Option<&BTreeMap<String, String>>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(archive);
    if let Some(env) = env {
        hasher.update(serde_json::to_vec(env).unwrap_or_default());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// `multipart/form-data` built in memory, since the signature covers the exact bytes sent.
fn multipart(
    boundary: &str,
    function_id: &str,
    archive: &[u8],
    env: Option<&BTreeMap<String, String>>,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(archive.len() + 1024);
    let text = |name: &str, value: &str, body: &mut Vec<u8>| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    text("function_id", function_id, &mut body);
    if let Some(env) = env {
        text("env", &serde_json::to_string(env)?, &mut body);
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; \
             filename=\"function.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(archive);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(body)
}
