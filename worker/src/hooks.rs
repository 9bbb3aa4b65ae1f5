//! Instance lifecycle hooks (seed 002), called only when the function configured them.
//!
//! Initializer: `POST /initialize` once an instance answers and before it takes traffic. A 4xx
//! (or no answer) is retried with backoff until the hook's timeout; a 5xx restarts the instance
//! first; past the timeout the start fails. PreStop: `GET /pre-stop` before an instance stops; a
//! failure is logged and the stop goes on. Every call carries a request id
//! (`x-slipway-request-id`, and `x-fc-request-id` for functions written against seed 002), and
//! every outcome goes to the deployment's log under phase `hook`, apart from invocation events.

use std::time::Duration;

use slipway_shared::{db, lifecycle::Hook};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    Environment,
    jobs::{StepError, log_lines},
    runtime::{Instance, lifecycle::runtime_step},
};

const PHASE: &str = "hook";
const BODY_IN_LOG: usize = 512;

fn request(
    env: &Environment,
    method: reqwest::Method,
    url: &str,
    timeout: Duration,
) -> (Uuid, reqwest::RequestBuilder) {
    let request_id = Uuid::new_v4();
    let builder = env
        .runtime
        .http()
        .request(method, url)
        .header("x-slipway-request-id", request_id.to_string())
        .header("x-fc-request-id", request_id.to_string())
        .timeout(timeout);
    (request_id, builder)
}

/// What the function answered, cut to what a log line can hold.
async fn summary(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let mut cut = body.trim().to_owned();
    if cut.len() > BODY_IN_LOG {
        let mut end = BODY_IN_LOG;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut.truncate(end);
        cut.push('…');
    }
    (status, cut)
}

async fn log(env: &Environment, deployment_id: Uuid, stream: &str, message: String) {
    log_lines(
        env,
        deployment_id,
        PHASE,
        vec![(stream.to_owned(), message)],
    )
    .await;
}

/// Runs the Initializer until it succeeds; an error fails the start. A restart may move the
/// instance to another address: `instance` then holds (and the deployment records) the new one.
pub async fn initialize(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    instance: &mut Instance,
    hook: Hook,
) -> Result<(), StepError> {
    let deployment_id = deployment.id;
    let started = Instant::now();
    let deadline = started + hook.timeout();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let url = format!("http://{}/initialize", instance.endpoint);
        let (request_id, builder) = request(env, reqwest::Method::POST, &url, left);
        let last = match builder.send().await {
            Ok(response) => {
                let (status, body) = summary(response).await;
                let outcome = format!(
                    "POST /initialize → {status} (attempt {attempt}, request {request_id}): {body}"
                );
                if (200..300).contains(&status) {
                    log(
                        env,
                        deployment_id,
                        "info",
                        format!(
                            "initializer succeeded after {} ms: {outcome}",
                            started.elapsed().as_millis()
                        ),
                    )
                    .await;
                    return Ok(());
                }
                if status >= 500 {
                    log(
                        env,
                        deployment_id,
                        "error",
                        format!("{outcome}; restarting the instance"),
                    )
                    .await;
                    *instance = restart_instance(env, deployment, instance).await?;
                } else {
                    log(env, deployment_id, "info", format!("{outcome}; retrying")).await;
                }
                outcome
            }
            Err(e) => {
                let outcome = format!("POST /initialize failed (attempt {attempt}): {e}");
                log(env, deployment_id, "info", outcome.clone()).await;
                outcome
            }
        };
        if Instant::now() + delay >= deadline {
            return Err(StepError::Permanent(format!(
                "the initializer did not succeed within {}s; last: {last}",
                hook.timeout_s
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn restart_instance(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    instance: &Instance,
) -> Result<Instance, StepError> {
    let restarted = env
        .runtime
        .restart(instance, deployment.function_id)
        .await
        .map_err(runtime_step)?;
    {
        let mut conn = env.pool.acquire().await?;
        let recorded = db::deployments::record_instance(
            &mut conn,
            deployment.id,
            deployment.run_token,
            &restarted.container_id,
            &restarted.endpoint,
            None,
        )
        .await?;
        if !recorded {
            env.runtime.remove(&restarted.container_id).await.ok();
            return Err(StepError::LostClaim);
        }
    }
    env.runtime
        .wait_until_answering(&restarted, env.config.start_timeout)
        .await
        .map_err(runtime_step)?;
    Ok(restarted)
}

/// Calls PreStop before an instance stops; never fails the stop.
pub async fn pre_stop(env: &Environment, deployment_id: Uuid, endpoint: &str, hook: Hook) {
    let url = format!("http://{endpoint}/pre-stop");
    let started = Instant::now();
    let (request_id, builder) = request(env, reqwest::Method::GET, &url, hook.timeout());
    let (stream, message) = match builder.send().await {
        Ok(response) => {
            let (status, body) = summary(response).await;
            let stream = if (200..300).contains(&status) {
                "info"
            } else {
                "error"
            };
            (
                stream,
                format!(
                    "GET /pre-stop → {status} in {} ms (request {request_id}): {body}",
                    started.elapsed().as_millis()
                ),
            )
        }
        Err(e) => (
            "error",
            format!("GET /pre-stop failed (request {request_id}): {e}; stopping anyway"),
        ),
    };
    log(env, deployment_id, stream, message).await;
}
