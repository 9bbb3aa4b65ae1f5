//! Deployments: `POST /api/functions/deploy` (multipart upload) and the build log.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Multipart, State, multipart::Field},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use slipway_shared::{db, domain::DeploymentStatus};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use super::{log_stream, timestamp};
use crate::error::{ApiPath, ApiQuery};
use crate::{
    AppState,
    auth::Caller,
    deploy::{self, DeployRequest, UploadedArchive},
    error::ApiError,
    openapi::{Failures, IdempotencyKey},
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeployAccepted {
    message: &'static str,
    deployment_id: Uuid,
    function_id: Uuid,
    version: i32,
    status: &'static str,
    logs_url: String,
}

/// `POST /api/functions/deploy`, multipart fields `function_id`, `archive` (tar.gz) and optional
/// `env` (a JSON object of strings). 202: the build is queued.
#[utoipa::path(
    post,
    path = "/api/functions/deploy",
    tag = "deployments",
    params(IdempotencyKey),
    request_body(content = DeployForm, content_type = "multipart/form-data"),
    responses((status = 202, description = "The build is queued", body = DeployAccepted), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Response, ApiError> {
    let limit = state.config.archive_limits.max_compressed_bytes;
    let request = read_deploy_form(multipart, limit).await?;
    let accepted = deploy::accept(&state, caller, request).await?;
    let body = DeployAccepted {
        message: "Deployment accepted; build queued",
        deployment_id: accepted.deployment_id,
        function_id: accepted.function_id,
        version: accepted.version,
        status: "building",
        logs_url: format!("/api/deployments/{}/logs", accepted.deployment_id),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// axum's `Display` is one fixed sentence; the cause (a missing boundary, a body that ended
/// mid-field, one past the limit) is what a client needs, and a 413 stays a 413.
fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status.is_server_error() {
        return ApiError::Internal(anyhow::Error::new(e).context("reading the upload"));
    }
    ApiError::new(
        status,
        "invalid_multipart",
        format!("malformed multipart body: {}", e.body_text()),
    )
}

async fn read_deploy_form(
    mut form: Multipart,
    archive_limit: u64,
) -> Result<DeployRequest, ApiError> {
    let mut function_id = None;
    let mut archive = None;
    let mut env = None;
    let mut secret_env = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "function_id" => {
                let text = field.text().await.map_err(multipart_error)?;
                function_id =
                    Some(Uuid::parse_str(text.trim()).map_err(|_| ApiError::function_not_found())?);
            }
            "archive" => archive = Some(read_capped(field, archive_limit).await?),
            "env" => {
                let text = field.text().await.map_err(multipart_error)?;
                env = Some(parse_env(&text)?);
            }
            "secret_env" => {
                let text = field.text().await.map_err(multipart_error)?;
                secret_env = Some(
                    serde_json::from_str::<std::collections::BTreeSet<String>>(&text).map_err(
                        |e| {
                            ApiError::bad_request(
                                "invalid_env",
                                format!("secret_env must be a JSON array of names: {e}"),
                            )
                        },
                    )?,
                );
            }
            other => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!(
                        "unexpected form field {other:?}; expected function_id, archive, env, secret_env"
                    ),
                ));
            }
        }
    }
    let missing = |name: &str| {
        ApiError::bad_request(
            "missing_field",
            format!("the form field {name:?} is required"),
        )
    };
    let env = env.unwrap_or_default();
    let secret_env = secret_env.unwrap_or_default();
    if let Some(unknown) = secret_env.iter().find(|name| !env.contains_key(*name)) {
        return Err(ApiError::bad_request(
            "invalid_env",
            format!("secret_env names {unknown:?}, which env does not set"),
        ));
    }
    Ok(DeployRequest {
        function_id: function_id.ok_or_else(|| missing("function_id"))?,
        archive: archive.ok_or_else(|| missing("archive"))?,
        env,
        secret_env,
        hold: false,
    })
}

/// Writes the archive field to a temporary file, refusing it as soon as it passes the limit.
async fn read_capped(mut field: Field<'_>, limit: u64) -> Result<UploadedArchive, ApiError> {
    let spool_failed = |e: std::io::Error| {
        ApiError::Internal(anyhow::Error::new(e).context("writing the archive"))
    };
    let named = tokio::task::spawn_blocking(tempfile::NamedTempFile::new)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(spool_failed)?;
    let mut file = tokio::fs::File::from_std(named.as_file().try_clone().map_err(spool_failed)?);
    let mut length = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        length += chunk.len() as u64;
        if length > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "archive_too_large",
                format!("the archive exceeds {limit} bytes compressed"),
            ));
        }
        file.write_all(&chunk).await.map_err(spool_failed)?;
    }
    file.flush().await.map_err(spool_failed)?;
    if length == 0 {
        return Err(ApiError::bad_request(
            "archive_empty",
            "the archive is empty",
        ));
    }
    Ok(UploadedArchive {
        file: named,
        length,
    })
}

/// Environment variables as Lambda takes them: names `[A-Za-z_][A-Za-z0-9_]*`, string values,
/// 4 KiB in all. `PORT` belongs to the platform (the Cloud Run contract).
fn parse_env(raw: &str) -> Result<BTreeMap<String, String>, ApiError> {
    const MAX_BYTES: usize = 4096;
    let invalid = |message: String| ApiError::bad_request("invalid_env", message);
    let env: BTreeMap<String, String> = serde_json::from_str(raw)
        .map_err(|e| invalid(format!("env must be a JSON object of strings: {e}")))?;
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_BYTES {
        return Err(invalid(format!(
            "env is {total} bytes; at most {MAX_BYTES} are allowed"
        )));
    }
    for name in env.keys() {
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(format!("{name:?} is not a valid variable name")));
        }
        if name == "PORT" || name.starts_with("SLIPWAY_") {
            return Err(invalid(format!("{name} is set by the platform")));
        }
    }
    Ok(env)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines after this line id (`next_after` of the previous answer).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// `true`: stream the log as server-sent events until the deployment settles.
    #[param(value_type = Option<bool>)]
    follow: Option<String>,
}

/// One server-sent event of a followed log (`follow=true`).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "documents the stream; `log_stream` writes it")]
pub struct LogEvent {
    /// `line` for each line; `end` once, with the deployment's final status, when it settles;
    /// `error` when the log could not be read.
    #[schema(pattern = "^(line|end|error)$")]
    event: String,
    /// A line's id, which `Last-Event-ID` resumes after.
    id: Option<String>,
    /// `line`: the line as JSON (`LogLine`); `end`: `{"status", "error"}` as JSON.
    data: String,
}

/// The upload: `multipart/form-data`.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the form; `read_deploy_form` reads it field by field"
)]
pub struct DeployForm {
    /// The function to deploy (its id).
    function_id: Uuid,
    /// The source: a gzipped tar with a `Dockerfile` at its root.
    #[schema(value_type = String, format = Binary, content_media_type = "application/gzip")]
    archive: Vec<u8>,
    /// Environment of the new version: a JSON object of strings.
    env: Option<String>,
    /// Names among `env` whose values are secrets: a JSON array of strings. They are sealed at
    /// rest and never shown again.
    secret_env: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LogLine {
    id: i64,
    phase: String,
    stream: String,
    message: String,
    at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeploymentLogs {
    deployment_id: Uuid,
    function_id: Uuid,
    version: i32,
    status: DeploymentStatus,
    error: Option<String>,
    lines: Vec<LogLine>,
    /// Pass as `after` to read only newer lines.
    next_after: i64,
}

/// `GET /api/deployments/{id}/logs[?after=N]`: the deployment's build, push and start log.
#[utoipa::path(
    get,
    path = "/api/deployments/{id}/logs",
    tag = "deployments",
    params(("id" = uuid::Uuid, Path, description = "The deployment's id"), LogQuery, ("Last-Event-ID" = Option<String>, Header, description = "With `follow=true`: resume after this line id (sent by a reconnecting EventSource)")),
    responses((status = 200, description = "The log's lines after `after`, or with `follow=true` a stream of server-sent events (one per line, `id` the line id) that ends when the deployment settles", content((DeploymentLogs = "application/json"), (LogEvent = "text/event-stream"))), Failures)
)]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    const PAGE: i64 = 10_000;
    let not_found = || ApiError::not_found("deployment_not_found", "no such deployment");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    // A reconnecting EventSource says where it stopped in `Last-Event-ID`.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let after = match resumed.as_ref().or(query.after.as_ref()) {
        None => 0,
        Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "after must be a non-negative integer")
        })?,
    };
    let follow = match query.follow.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_follow",
                format!("follow must be true or false, got {other:?}"),
            ));
        }
    };
    let mut conn = state.pool.acquire().await?;
    let deployment = db::deployments::get_for_owner(&mut conn, caller.user_id, id)
        .await?
        .ok_or_else(not_found)?;
    if follow {
        drop(conn);
        return Ok(log_stream::follow(state.pool.clone(), id, after).into_response());
    }
    let lines = db::logs::list(&mut conn, id, after, PAGE).await?;
    Ok(Json(DeploymentLogs {
        deployment_id: deployment.id,
        function_id: deployment.function_id,
        version: deployment.version,
        status: deployment.status,
        error: deployment.error,
        next_after: lines.last().map_or(after, |l| l.id),
        lines: lines.into_iter().map(LogLine::from).collect(),
    })
    .into_response())
}

impl From<db::logs::LogRow> for LogLine {
    fn from(l: db::logs::LogRow) -> Self {
        Self {
            id: l.id,
            phase: l.phase,
            stream: l.stream,
            message: l.message,
            at: timestamp(l.created_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn env_accepts_plain_variables_and_refuses_the_platforms() {
        let env = parse_env(r#"{"GREETING":"hi","_X1":""}"#).unwrap();
        assert_eq!(env["GREETING"], "hi");
        for bad in [
            r#"["a"]"#,
            r#"{"A":1}"#,
            r#"{"1A":"x"}"#,
            r#"{"A-B":"x"}"#,
            r#"{"PORT":"1"}"#,
            r#"{"SLIPWAY_X":"1"}"#,
            "not json",
        ] {
            assert!(parse_env(bad).is_err(), "{bad} should be refused");
        }
        let big = format!(r#"{{"A":"{}"}}"#, "x".repeat(5000));
        assert!(parse_env(&big).is_err());
    }
}
