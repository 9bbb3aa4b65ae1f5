//! Runtime controls (seed 004): enqueue a restart or recycle of the active version's instance,
//! and change how a function serves (`enabled`, `on_tag_overwrite`, hooks, limits).

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{FunctionStatus, RequestedLimits},
    jobs::{Job, RuntimeAction, RuntimeJob},
    lifecycle::Lifecycle,
    templates::Template,
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    deletion::function_deleted,
    error::ApiError,
};

/// Enqueues the job under the function's lock, after checking there is an instance to replace.
#[tracing::instrument(skip(state, caller))]
pub async fn replace_instance(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    action: RuntimeAction,
) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let function = auth::lock_for_change(&mut tx, &caller, function_id).await?;
    match function.status {
        FunctionStatus::Deleted => return Err(function_deleted()),
        FunctionStatus::PendingDeletion => {
            return Err(ApiError::conflict(
                "function_pending_deletion",
                "the function is scheduled for deletion; cancel the deletion first",
            ));
        }
        _ => {}
    }
    let view = db::functions::find(&mut tx, caller.user_id, function_id)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    if !view.enabled {
        return Err(ApiError::conflict(
            "function_disabled",
            "the function is disabled; nothing restarts until it is enabled again",
        ));
    }
    if view.container_id.is_none() {
        return Err(ApiError::conflict(
            "no_instance",
            "the function has no running instance to restart; deploy a version first",
        ));
    }
    RuntimeJob {
        function_id,
        action,
        request_id: Uuid::new_v4(),
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the runtime job")?;
    tx.commit().await?;
    Ok(())
}

/// What `PUT /api/v1/functions/{id}` may change.
pub struct Changes {
    pub enabled: Option<bool>,
    pub on_tag_overwrite: Option<String>,
    pub lifecycle: Option<Lifecycle>,
    pub limits: Option<RequestedLimits>,
    pub read_only_root: Option<bool>,
    /// Must be the function's name.
    pub label: Option<String>,
    /// `Some("")` clears it.
    pub description: Option<String>,
    pub template: Option<Template>,
    /// Checked (`templates::check_handler`).
    pub handler: Option<String>,
}

pub async fn update(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    changes: Changes,
) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let function = auth::lock_for_change(&mut tx, &caller, function_id).await?;
    if function.status == FunctionStatus::Deleted {
        return Err(function_deleted());
    }
    if let Some(label) = &changes.label
        && *label != function.name
    {
        return Err(ApiError::bad_request(
            "label_immutable",
            format!(
                "the label is the function's name, {:?}, and never changes",
                function.name
            ),
        ));
    }
    let source = match (changes.template, changes.handler.as_deref()) {
        (None, None) => None,
        (template, handler) => {
            let current = db::functions::find(&mut tx, caller.user_id, function_id)
                .await?
                .ok_or_else(ApiError::function_not_found)?;
            let template = template
                .or_else(|| current.template.as_deref().and_then(Template::parse))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "template_required",
                        "the function has no template yet: give template and handler together",
                    )
                })?;
            let handler = handler
                .map(str::to_owned)
                .or(current.handler)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "handler_required",
                        "the function has no handler yet: give template and handler together",
                    )
                })?;
            Some((template, handler))
        }
    };
    if changes.description.is_some() || source.is_some() {
        db::functions::set_source(
            &mut tx,
            function_id,
            changes
                .description
                .as_deref()
                .map(|d| (!d.is_empty()).then_some(d)),
            source.as_ref().map(|(t, h)| (t.name(), h.as_str())),
        )
        .await?;
    }
    if let Some(enabled) = changes.enabled {
        db::functions::set_enabled(&mut tx, function_id, enabled).await?;
    }
    if let Some(policy) = &changes.on_tag_overwrite {
        db::functions::set_on_tag_overwrite(&mut tx, function_id, policy).await?;
    }
    if let Some(lifecycle) = &changes.lifecycle {
        db::functions::set_lifecycle(&mut tx, function_id, lifecycle).await?;
    }
    if let Some(limits) = &changes.limits {
        db::functions::set_limits(&mut tx, function_id, limits).await?;
    }
    if let Some(read_only_root) = changes.read_only_root {
        db::functions::set_read_only_root(&mut tx, function_id, read_only_root).await?;
    }
    tx.commit().await?;
    // This process answers the next call as changed (a disabled function refuses it at once);
    // the others hear of it from Postgres.
    state.hot.forget_function(function_id);
    Ok(())
}
