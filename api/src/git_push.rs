//! The push use case: a delivery whose signature checked out becomes, in one transaction, a
//! claimed delivery id and, for each binding of the pushed branch, a `fetching` deployment with
//! its `source` job. The webhook is answered as soon as that commits; fetching, building and
//! deploying happen on the workers.
//!
//! Ordering. Providers deliver out of order and retry, so a push is accepted only if it is newer
//! than the newest push the function accepted: it continues that push (its `before` is that
//! commit), or, when the two do not chain, nothing accepted moved the branch away from it and its
//! head commit is not older. A newer push supersedes older pushes that are still waiting; one
//! already building finishes, but the deploy job never activates it over a newer version that
//! has served.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use slipway_shared::{
    db::{self, deployments::NewPushDeployment, git::BindingRow},
    domain::FunctionEvent,
    git::GitProvider,
    jobs::{Job, SourceJob},
};
use tracing::info;
use uuid::Uuid;

use crate::{AppState, deploy::open_update, error::ApiError, webhooks::Push};

/// What a delivery did, answered to the provider (and shown in its delivery log).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryOutcome {
    pub delivery_id: String,
    pub event: String,
    pub deployments: Vec<QueuedDeployment>,
    pub skipped: Vec<Skipped>,
    /// A redelivery of an id already handled: the first answer, and nothing new happened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueuedDeployment {
    pub binding_id: Uuid,
    pub function_id: Uuid,
    pub deployment_id: Uuid,
    pub version: i32,
    pub commit_sha: String,
    /// Older pushes of the function that were still waiting and will not run.
    pub superseded: u64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_id: Option<Uuid>,
    /// `event_not_handled`, `branch_not_bound`, `branch_deleted`, `already_accepted`,
    /// `older_than_accepted`, `function_not_deployable`, `binding_removed`.
    pub reason: String,
}

pub struct Delivery<'a> {
    pub provider: GitProvider,
    pub delivery_id: &'a str,
    pub event: &'a str,
    /// None for events other than pushes, which are acknowledged and ignored.
    pub push: Option<Push>,
    /// The bindings of the repository whose secret signed the delivery.
    pub bindings: Vec<BindingRow>,
}

impl Delivery<'_> {
    /// Where its id is remembered: the bindings it was verified for, so ids never collide
    /// across tenants.
    fn scope(&self) -> String {
        let mut ids: Vec<String> = self.bindings.iter().map(|b| b.id.to_string()).collect();
        ids.sort();
        ids.join(",")
    }
}

#[tracing::instrument(skip_all, fields(provider = %delivery.provider, delivery_id = delivery.delivery_id))]
pub async fn accept(state: &AppState, delivery: Delivery<'_>) -> Result<DeliveryOutcome, ApiError> {
    let mut tx = state.pool.begin().await?;
    let provider = delivery.provider.as_str();
    let scope = delivery.scope();
    if let db::git::DeliveryClaim::Seen { response } = db::git::claim_delivery(
        &mut tx,
        provider,
        &scope,
        delivery.delivery_id,
        delivery.event,
    )
    .await?
    {
        // The claim waited for the first delivery's transaction, which stored its answer.
        let mut outcome: DeliveryOutcome =
            serde_json::from_value(response).map_err(anyhow::Error::from)?;
        outcome.duplicate = true;
        return Ok(outcome);
    }
    let mut outcome = DeliveryOutcome {
        delivery_id: delivery.delivery_id.to_owned(),
        event: delivery.event.to_owned(),
        deployments: Vec::new(),
        skipped: Vec::new(),
        duplicate: false,
    };
    match &delivery.push {
        None => outcome.skipped.push(Skipped {
            binding_id: None,
            function_id: None,
            reason: "event_not_handled".into(),
        }),
        Some(push) => {
            let mut bindings = delivery.bindings;
            // One lock order across concurrent deliveries: by function.
            bindings.sort_by_key(|b| (b.function_id, b.id));
            for binding in &bindings {
                let skip = |reason: &str| Skipped {
                    binding_id: Some(binding.id),
                    function_id: Some(binding.function_id),
                    reason: reason.to_owned(),
                };
                if push.branch() != Some(binding.branch.as_str()) {
                    outcome.skipped.push(skip("branch_not_bound"));
                } else if push.deletes_branch() {
                    outcome.skipped.push(skip("branch_deleted"));
                } else {
                    match accept_for_binding(
                        &mut tx,
                        state.config.secrets_key.as_ref(),
                        binding,
                        push,
                    )
                    .await?
                    {
                        Ok(queued) => outcome.deployments.push(queued),
                        Err(reason) => outcome.skipped.push(skip(reason)),
                    }
                }
            }
        }
    }
    let response = serde_json::to_value(&outcome).map_err(anyhow::Error::from)?;
    db::git::record_delivery_response(&mut tx, provider, &scope, delivery.delivery_id, &response)
        .await?;
    tx.commit().await?;
    info!(
        queued = outcome.deployments.len(),
        skipped = outcome.skipped.len(),
        "delivery handled"
    );
    Ok(outcome)
}

/// Accepts the push for one binding, or says why not.
async fn accept_for_binding(
    tx: &mut sqlx::PgConnection,
    secrets_key: Option<&slipway_shared::secrets::SecretsKey>,
    binding: &BindingRow,
    push: &Push,
) -> Result<Result<QueuedDeployment, &'static str>, ApiError> {
    let Some(function) = db::functions::lock(tx, binding.function_id).await? else {
        return Ok(Err("function_not_deployable"));
    };
    // Deleting a binding locks its function too: checked under the lock, a binding removed since
    // the delivery was verified is seen as gone.
    if db::git::get_binding(tx, binding.id).await?.is_none() {
        return Ok(Err("binding_removed"));
    }
    if let Some(latest) = db::deployments::latest_push(tx, function.id).await? {
        if latest.commit_sha == push.after {
            return Ok(Err("already_accepted"));
        }
        let continues_latest = push.before.as_deref() == Some(latest.commit_sha.as_str());
        if !continues_latest {
            let pushed_over =
                db::deployments::commit_was_pushed_over(tx, function.id, &push.after).await?;
            let older = matches!(
                (push.committed_at, latest.committed_at),
                (Some(this), Some(accepted)) if this < accepted
            );
            if pushed_over || older {
                return Ok(Err("older_than_accepted"));
            }
        }
    }
    let Ok(update) = open_update(tx, &function, false).await? else {
        return Ok(Err("function_not_deployable"));
    };
    let deployment_id = Uuid::new_v4();
    // The function's current env, sealed again for the new deployment's row.
    let env = match db::functions::find(tx, function.owner_id, function.id).await? {
        Some(found) => {
            let key = secrets_key;
            slipway_shared::env::FunctionEnv::open(
                &found.env,
                key,
                &slipway_shared::env::function_context(function.id),
            )
            .and_then(|env| env.seal(key, &slipway_shared::env::deployment_context(deployment_id)))
            .context("carrying the function's env over to the pushed deployment")?
        }
        None => serde_json::json!({}),
    };
    db::deployments::insert_from_push(
        tx,
        &NewPushDeployment {
            id: deployment_id,
            function_id: function.id,
            version: update.version,
            git_binding_id: binding.id,
            commit_sha: &push.after,
            parent_sha: push.before.as_deref(),
            committed_at: push.committed_at,
            env: &env,
        },
    )
    .await?;
    db::functions::change_status(
        tx,
        function.id,
        update.status,
        FunctionEvent::DeployRequested,
    )
    .await?;
    let superseded =
        db::deployments::supersede_waiting_pushes(tx, function.id, deployment_id, update.version)
            .await?;
    SourceJob { deployment_id }
        .enqueue(tx)
        .await
        .map_err(anyhow::Error::from)?;
    info!(%deployment_id, version = update.version, commit = %push.after, superseded, "push accepted");
    Ok(Ok(QueuedDeployment {
        binding_id: binding.id,
        function_id: function.id,
        deployment_id,
        version: update.version,
        commit_sha: push.after.clone(),
        superseded,
    }))
}
