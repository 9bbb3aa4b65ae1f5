//! `purge`: remove what a deleted function, or the versions a function no longer retains, leave
//! behind. The order survives a crash at any step, because each step only removes things the
//! steps before it made unreachable and every removal accepts "already gone":
//!
//! 1. under the function's lock, fence everything: the deletion becomes `purging` (no cancel),
//!    in-flight deployments fail, the active one steps down, every version is fenced against
//!    rollback;
//! 2. the runtime's containers (found by label, so a crashed job's leftovers go too);
//! 3. every image of the function from the registry, by digest, and from the engine's store;
//! 4. every archive from the object store;
//! 5. the function becomes a tombstone: status `deleted`, history kept (env values wiped), name reserved, git
//!    bindings (and their secrets) gone.
//!
//! Retention (`OldVersions`) runs steps 3 and 4 for versions past the window, but never deletes a
//! digest that the active version, a retained version, or a function in its grace period uses.

use std::{collections::HashSet, sync::Arc};

use slipway_shared::{
    db::{self, deployments::PruneTarget},
    domain::{Digest, FunctionStatus, ImageRef},
    jobs::PurgeJob,
    store::{StoreError, archive_key, function_prefix},
};
use tracing::{info, warn};
use uuid::Uuid;

use super::{RunJob, StepError, with_retries};
use crate::runtime::lifecycle::runtime_step;
use crate::{Environment, hooks, registry::RegistryError};

impl RunJob for PurgeJob {
    #[tracing::instrument(name = "purge", skip_all, fields(job = ?self))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let outcome = match self {
            Self::Function { function_id, .. } => purge_function(&env, function_id).await,
            Self::OldVersions { function_id, .. } => prune_old_versions(&env, function_id).await,
            Self::Orphans {
                created_before,
                limit,
            } => remove_orphans(&env, created_before, limit as usize).await,
        };
        // A purge that fails is a job error: it changed nothing a user reads, and running it
        // again (the scheduler's next sweep, or an operator) finishes it.
        outcome.map_err(|e| match e {
            StepError::Permanent(m) => anyhow::anyhow!(m),
            other @ (StepError::Overtaken { .. } | StepError::LostClaim) => other.into(),
            StepError::Transient(e) => e,
        })
    }
}

/// Removes what the runtime holds for this installation's functions that no deployment owns, at
/// most `limit` objects a tick:
/// - an instance made before `created_before` that no deployment owns (`owned_instances`): none
///   records it (every start records its instance at once, so one this old is a crashed run's
///   leftover, or was made behind Slipway's back), or only versions that settled before then and
///   neither serve nor are on their way (a worker died while the previous version drained).
///   Nothing routes to it and it must not run on.
/// - the network of a purged function, once nothing of it is left: it holds its share of the
///   address pool.
///
/// Objects labelled with functions this database does not know are another installation's on
/// a shared engine, and are left alone.
async fn remove_orphans(
    env: &Environment,
    created_before: chrono::DateTime<chrono::Utc>,
    limit: usize,
) -> Result<(), StepError> {
    let instances = env
        .runtime
        .labelled_instances()
        .await
        .map_err(runtime_step)?;
    let networks = env
        .runtime
        .function_networks()
        .await
        .map_err(runtime_step)?;
    let mut conn = env.pool.acquire().await?;
    let labelled: Vec<Uuid> = instances
        .iter()
        .filter_map(|i| i.function_id)
        .chain(networks.iter().map(|(_, function_id)| *function_id))
        .collect();
    let known: std::collections::HashMap<Uuid, bool> = db::functions::known(&mut conn, &labelled)
        .await?
        .into_iter()
        .collect();
    let old: Vec<String> = instances
        .iter()
        .filter(|i| i.function_id.is_some_and(|f| known.contains_key(&f)))
        .filter(|i| i.created.is_some_and(|at| at < created_before))
        .map(|i| i.id.clone())
        .collect();
    let owned: HashSet<String> = db::deployments::owned_instances(&mut conn, &old, created_before)
        .await?
        .into_iter()
        .collect();
    // Not held across the engine's stops, which take seconds each.
    drop(conn);
    let mut budget = limit;
    let mut removed = HashSet::new();
    for orphan in instances
        .iter()
        .filter(|i| old.contains(&i.id) && !owned.contains(&i.id))
        .take(budget)
    {
        warn!(
            instance = %orphan.id,
            function_id = ?orphan.function_id,
            deployment_id = ?orphan.deployment_id,
            "removing a runtime instance that no deployment owns"
        );
        env.runtime.remove(&orphan.id).await.map_err(runtime_step)?;
        let mut conn = env.pool.acquire().await?;
        db::deployments::forget_leftover_instance(&mut conn, &orphan.id).await?;
        removed.insert(orphan.id.as_str());
        budget -= 1;
    }

    let purged = |function_id: &Uuid| known.get(function_id) == Some(&true);
    let still_in_use = |function_id: Uuid| {
        instances
            .iter()
            .any(|i| i.function_id == Some(function_id) && !removed.contains(i.id.as_str()))
    };
    for (network, function_id) in networks
        .iter()
        .filter(|(_, f)| purged(f) && !still_in_use(*f))
        .take(budget)
    {
        warn!(%network, %function_id, "removing the network of a function that is gone");
        env.runtime
            .remove_network(*function_id)
            .await
            .map_err(runtime_step)?;
    }
    Ok(())
}

async fn purge_function(env: &Environment, function_id: Uuid) -> Result<(), StepError> {
    let Some(deletion) = fence_function(env, function_id).await? else {
        return Ok(());
    };

    // 2. Containers, each told first if the function asked for PreStop.
    let (lifecycle, endpoints) = {
        let mut conn = env.pool.acquire().await?;
        (
            db::functions::lifecycle(&mut conn, function_id).await?,
            db::deployments::endpoints_of_function(&mut conn, function_id).await?,
        )
    };
    if let Some(hook) = lifecycle.pre_stop {
        for (deployment_id, endpoint) in &endpoints {
            hooks::pre_stop(env, *deployment_id, endpoint, hook).await;
        }
    }
    let containers = with_retries(env, "listing the function's containers", || async {
        env.runtime
            .instances_of(function_id)
            .await
            .map_err(runtime_step)
    })
    .await?;
    for container in &containers {
        with_retries(env, "removing a container", || async {
            env.runtime.remove(container).await.map_err(runtime_step)
        })
        .await?;
    }
    // The function's network goes with its last instance: its addresses return to the pool.
    with_retries(env, "removing the function's network", || async {
        env.runtime
            .remove_network(function_id)
            .await
            .map_err(runtime_step)
    })
    .await?;
    {
        let mut conn = env.pool.acquire().await?;
        db::deployments::clear_all_containers(&mut conn, function_id).await?;
    }

    // 3 and 4. Images, then archives.
    let targets = {
        let mut conn = env.pool.acquire().await?;
        db::deployments::purge_targets(&mut conn, function_id).await?
    };
    remove_images(env, &targets).await?;
    for repository in repositories(&targets) {
        with_retries(env, "removing engine images", || async {
            env.runtime
                .remove_images(&repository)
                .await
                .map_err(runtime_step)
        })
        .await?;
    }
    remove_archives(env, function_id, &targets).await?;
    // Archives no deployment row points to (an upload whose transaction then failed).
    let leftovers = with_retries(env, "listing the function's archives", || async {
        env.store
            .list(&function_prefix(function_id))
            .await
            .map_err(store_step)
    })
    .await?;
    for key in &leftovers {
        delete_archive(env, key).await?;
    }

    // 5. The tombstone.
    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, function_id).await?;
    let tombstoned =
        db::deletions::tombstone_function(&mut tx, function_id, env.config.name_reservation)
            .await
            .map_err(StepError::Transient)?;
    db::deletions::complete(&mut tx, deletion).await?;
    db::git::delete_bindings_of_function(&mut tx, function_id).await?;
    db::functions::wipe_env(&mut tx, function_id).await?;
    tx.commit().await?;
    info!(
        %function_id,
        containers = containers.len(),
        versions = targets.len(),
        tombstoned,
        "function purged"
    );
    Ok(())
}

/// Step 1. Returns the deletion to complete, or `None` when there is nothing to purge: the
/// deletion was cancelled, or an earlier run finished it.
async fn fence_function(env: &Environment, function_id: Uuid) -> Result<Option<Uuid>, StepError> {
    let mut tx = env.pool.begin().await?;
    let Some(function) = db::functions::lock(&mut tx, function_id).await? else {
        warn!(%function_id, "no such function; nothing to purge");
        return Ok(None);
    };
    let status = function.status;
    if status != FunctionStatus::PendingDeletion {
        info!(%function_id, %status, "function is not pending deletion; nothing to purge");
        return Ok(None);
    }
    let deletion = db::deletions::open_for_function(&mut tx, function_id)
        .await?
        .ok_or_else(|| {
            StepError::Permanent(format!(
                "function {function_id} is pending deletion without a deletion record"
            ))
        })?;
    db::deletions::begin_purge(&mut tx, deletion.id).await?;
    db::deployments::retire_all(&mut tx, function_id, "the function was deleted").await?;
    // Their containers go with the function's others, below.
    db::aliases::take_all(&mut tx, function_id).await?;
    tx.commit().await?;
    Ok(Some(deletion.id))
}

async fn prune_old_versions(env: &Environment, function_id: Uuid) -> Result<(), StepError> {
    let targets = {
        let mut tx = env.pool.begin().await?;
        let Some(function) = db::functions::lock(&mut tx, function_id).await? else {
            return Ok(());
        };
        // A function in its grace period keeps everything: a cancel must find it whole.
        if matches!(
            function.status,
            FunctionStatus::PendingDeletion | FunctionStatus::Deleted
        ) {
            return Ok(());
        }
        let keep = i64::from(env.config.retained_versions);
        let targets = db::deployments::retention_candidates(&mut tx, function_id, keep).await?;
        let ids: Vec<Uuid> = targets.iter().map(|t| t.id).collect();
        db::deployments::begin_prune(&mut tx, &ids).await?;
        tx.commit().await?;
        targets
    };
    if targets.is_empty() {
        return Ok(());
    }
    remove_images(env, &targets).await?;
    remove_archives(env, function_id, &targets).await?;
    info!(
        %function_id,
        versions = ?targets.iter().map(|t| t.version).collect::<Vec<_>>(),
        kept_shared_digests = targets.iter().filter(|t| t.digest_in_use).count(),
        "pruned versions past the retention window"
    );
    Ok(())
}

/// Deletes each target's manifest by digest, unless another version still uses it.
async fn remove_images(env: &Environment, targets: &[PruneTarget]) -> Result<(), StepError> {
    for target in targets.iter().filter(|t| !t.digest_in_use) {
        let (Some(tag), Some(digest)) = (&target.image_tag, &target.image_digest) else {
            continue;
        };
        let (Some(image), Ok(digest)) = (ImageRef::parse_tagged(tag), Digest::parse(digest)) else {
            warn!(deployment_id = %target.id, tag, digest, "unparseable image reference; skipped");
            continue;
        };
        with_retries(env, "deleting an image from the registry", || async {
            env.registry
                .delete_manifest(&image, &digest)
                .await
                .map_err(|e| match e {
                    RegistryError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
                    RegistryError::Refused(m) => StepError::Permanent(m),
                })
        })
        .await?;
    }
    Ok(())
}

/// Deletes each target's archive, then records the version as pruned.
async fn remove_archives(
    env: &Environment,
    function_id: Uuid,
    targets: &[PruneTarget],
) -> Result<(), StepError> {
    for target in targets {
        // A pushed commit whose fetch died between storing the archive and recording it left
        // the object at its version's key without naming it.
        let key = target
            .archive_key
            .clone()
            .unwrap_or_else(|| archive_key(function_id, target.version));
        delete_archive(env, &key).await?;
        let mut conn = env.pool.acquire().await?;
        db::deployments::mark_pruned(&mut conn, target.id).await?;
    }
    Ok(())
}

async fn delete_archive(env: &Environment, key: &str) -> Result<(), StepError> {
    with_retries(env, "deleting an archive", || async {
        env.store.delete(key).await.map_err(store_step)
    })
    .await
}

fn store_step(e: StoreError) -> StepError {
    match e {
        StoreError::Unavailable(e) => StepError::Transient(e),
        other => StepError::Permanent(other.to_string()),
    }
}

/// The distinct `registry/repository` names the targets were pushed to.
fn repositories(targets: &[PruneTarget]) -> Vec<String> {
    let mut names: Vec<String> = targets
        .iter()
        .filter_map(|t| t.image_tag.as_deref().and_then(ImageRef::parse_tagged))
        .map(|image| image.name())
        .collect();
    names.sort();
    names.dedup();
    names
}
