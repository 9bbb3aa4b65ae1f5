//! Following a swarm's placement: the engine, not Slipway, restarts and moves tasks (a node
//! went down, a task crashed), so every serving instance's endpoint and state are read back
//! from the manager once a second and recorded:
//! - a task running at a new endpoint: the endpoint is recorded (and a function that was
//!   rescheduling or unschedulable is Active again);
//! - no task running, the engine placing one: the function is Pending with the engine's reason,
//!   and invocations wait for it as for a wake, never going to the old address;
//! - no node can take the task: the function is Failed with the engine's reason.
//!
//! Every worker follows; each change is made under the function's row lock and only if the
//! recorded instance is still the one observed, so two workers agree.

use std::time::Duration;

use slipway_shared::{
    db,
    domain::{InstanceFailure, ServingEvent, ServingState},
};
use tracing::{info, warn};

use super::{Observed, SwarmRuntime};
use crate::Environment;

const EVERY: Duration = Duration::from_secs(1);

pub async fn follow_tasks(env: &Environment, swarm: &SwarmRuntime) {
    loop {
        if let Err(e) = follow_once(env, swarm).await {
            warn!(error = %format!("{e:#}"), "following the swarm's tasks");
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn follow_once(env: &Environment, swarm: &SwarmRuntime) -> anyhow::Result<()> {
    let instances = {
        let mut conn = env.pool.acquire().await?;
        db::deployments::serving_instances(&mut conn).await?
    };
    for instance in instances {
        let observed = swarm.observe(&instance.instance_id).await?;
        record(env, &instance, observed).await?;
    }
    Ok(())
}

async fn record(
    env: &Environment,
    instance: &db::deployments::ServingInstance,
    observed: Observed,
) -> anyhow::Result<()> {
    let function_id = instance.function_id;
    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, function_id).await?;
    // The deployment may have been switched or released since the list was read.
    let still = db::deployments::active_for_function(&mut tx, function_id)
        .await?
        .is_some_and(|active| {
            active.id == instance.deployment_id
                && active.container_id.as_deref() == Some(instance.instance_id.as_str())
        });
    if !still {
        return Ok(());
    }
    let serving = db::functions::serving(&mut tx, function_id).await?;
    // A wake or a deploy is in charge of a Pending function; only a reschedule is ours.
    let ours = match serving.state {
        ServingState::Active => true,
        ServingState::Pending => serving.rescheduling(),
        ServingState::Failed => serving.failed_by_instance(),
        ServingState::Inactive => false,
    };
    if !ours {
        return Ok(());
    }
    let (event, line) = match observed {
        Observed::Running { endpoint, .. } => {
            let moved = instance.endpoint.as_deref() != Some(endpoint.as_str());
            if moved {
                // Under the function's lock, and only for the instance that serves: no run's
                // claim is needed to say where the engine moved it.
                db::deployments::record_instance(
                    &mut tx,
                    instance.deployment_id,
                    None,
                    &instance.instance_id,
                    &endpoint,
                    None,
                )
                .await?;
            }
            match serving.state {
                ServingState::Pending => (
                    Some(ServingEvent::InstanceRescheduled),
                    Some(format!("rescheduled: answering at {endpoint}")),
                ),
                ServingState::Failed => (
                    Some(ServingEvent::InstanceReplaced),
                    Some(format!("placed again: answering at {endpoint}")),
                ),
                _ if moved => (
                    None,
                    Some(format!("the engine moved the instance to {endpoint}")),
                ),
                _ => (None, None),
            }
        }
        Observed::Starting { reason } | Observed::Failed { reason } => {
            let told = serving
                .state_reason
                .as_deref()
                .is_some_and(|r| r.ends_with(&reason));
            // Failed (unschedulable) stays so until a task runs again.
            if told || serving.state == ServingState::Failed {
                (None, None)
            } else {
                (
                    Some(ServingEvent::InstanceRescheduling {
                        reason: reason.clone(),
                    }),
                    Some(format!(
                        "the engine is placing the instance again: {reason}"
                    )),
                )
            }
        }
        Observed::Unplaceable { reason } => {
            if serving.state == ServingState::Failed {
                (None, None)
            } else {
                (
                    Some(ServingEvent::InstanceFailed {
                        failure: InstanceFailure::Unschedulable,
                        detail: reason.clone(),
                    }),
                    Some(format!("unschedulable: {reason}")),
                )
            }
        }
        // Scaled to zero or removed by a job that is about to record it.
        Observed::Idle | Observed::Gone => (None, None),
    };
    if let Some(event) = &event {
        db::functions::transition_serving(&mut tx, function_id, event).await?;
    }
    if let Some(line) = &line {
        db::logs::append(
            &mut tx,
            instance.deployment_id,
            "runtime",
            &[("info".into(), line.clone())],
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(line) = line {
        info!(%function_id, "{line}");
    }
    Ok(())
}
