//! The init use case (seed 000): a function of the caller's by that name, created with its
//! lifecycle hooks in one transaction, or the existing one. A failure between the two must not
//! leave a function whose hooks are lost for good; a retried init finds it and changes nothing.

use slipway_shared::{
    db::{self, functions::FunctionRow},
    domain::FunctionName,
    lifecycle::Lifecycle,
};

use crate::{AppState, auth::Caller, error::ApiError, routes::timestamp};

/// What a function made from handler code (seed 003's create) holds besides its name.
pub struct Source<'a> {
    pub description: Option<&'a str>,
    pub template: slipway_shared::templates::Template,
    pub handler: &'a str,
}

pub struct Initialized {
    pub function: FunctionRow,
    /// The caller already had a function of that name: it is answered unchanged.
    pub already_exists: bool,
}

/// `source`: the function is made from handler code; it is written only if the function is
/// created here, never over an existing one.
#[tracing::instrument(skip(state, caller, lifecycle, source))]
pub async fn init(
    state: &AppState,
    caller: &Caller,
    name: &str,
    skip_signing: bool,
    lifecycle: Option<Lifecycle>,
    source: Option<&Source<'_>>,
) -> Result<Initialized, ApiError> {
    let name = FunctionName::parse(name)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let mut tx = state.pool.begin().await?;
    if let Some(until) =
        db::deletions::name_reserved_until(&mut tx, caller.user_id, name.as_str()).await?
        && db::functions::find_by_name(&mut tx, caller.user_id, &name)
            .await?
            .is_none()
    {
        return Err(ApiError::conflict(
            "name_reserved",
            format!(
                "a deleted function of yours held the name {name}; it stays reserved until {}",
                timestamp(until)
            ),
        ));
    }
    if let Some(lifecycle) = &lifecycle {
        lifecycle
            .validate()
            .map_err(|message| ApiError::bad_request("invalid_lifecycle", message))?;
    }
    let created = db::functions::insert(&mut tx, caller.user_id, &name, skip_signing).await?;
    if let (Some(id), Some(lifecycle)) = (created, &lifecycle) {
        db::functions::set_lifecycle(&mut tx, id, lifecycle).await?;
    }
    if let (Some(id), Some(source)) = (created, source) {
        db::functions::set_source(
            &mut tx,
            id,
            Some(source.description),
            Some((source.template.name(), source.handler)),
        )
        .await?;
    }
    let row = db::functions::find_by_name(&mut tx, caller.user_id, &name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("function {name} vanished right after init"))?;
    tx.commit().await?;
    Ok(Initialized {
        function: row,
        already_exists: created.is_none(),
    })
}
