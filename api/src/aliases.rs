//! Aliases: a stable name for one version of a function (Lambda's aliases, Cloud Run's tags),
//! invoked at `/api/v1/functions/invoke/{id}@{name}`. An alias points at a version that has an
//! image (built, serving or served before) and moves only when its owner points it elsewhere: a
//! deploy or a rollback moves the active version, never an alias. Each use case is one
//! transaction under the function's lock, which retention takes too, so a version cannot be
//! pruned between the check here and the alias that keeps it.

use std::collections::BTreeMap;

use slipway_shared::{
    db::{
        self,
        aliases::{AliasRow, Split},
    },
    domain::{DeploymentStatus, FunctionStatus},
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    error::ApiError,
    rollback::version_of,
};

pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,62}$";

/// Lower-case letters, digits, `-` and `_`, starting with a letter, at most 63 characters: never
/// a number, so `@3` always means version 3.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_alias_name",
            format!(
                "an alias name is 1 to 63 lower-case letters, digits, '-' or '_', starting with \
                 a letter ({NAME_PATTERN})"
            ),
        ))
    }
}

pub fn alias_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "alias_not_found",
        format!("the function has no alias {name:?}"),
    )
}

/// An alias's `weights` (Lambda's routing config): `{"<version>": share}` sends that share of
/// its calls, drawn per call, to one other version; the rest go to the alias's own. Returns the
/// other version and its share.
pub fn parse_weights(
    weights: Option<&BTreeMap<String, f64>>,
    version: i32,
) -> Result<Option<(i32, f64)>, ApiError> {
    let Some(weights) = weights.filter(|w| !w.is_empty()) else {
        return Ok(None);
    };
    let invalid = |message: String| ApiError::bad_request("invalid_weights", message);
    let mut entries = weights.iter();
    let (Some((other, &weight)), None) = (entries.next(), entries.next()) else {
        return Err(invalid(
            "an alias splits its calls with one other version: weights has one entry".into(),
        ));
    };
    let other = other
        .parse::<i32>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid(format!("{other:?} is not a version number")))?;
    if other == version {
        return Err(invalid(format!(
            "version {other} is the alias's own; weights names the other version"
        )));
    }
    if !(weight > 0.0 && weight < 1.0) {
        return Err(invalid(format!(
            "a share is between 0 and 1, both excluded (got {weight})"
        )));
    }
    Ok(Some((other, weight)))
}

/// The deployment of `version`, if an alias may point at it.
async fn aliasable(
    conn: &mut sqlx::PgConnection,
    function_id: Uuid,
    version: i32,
) -> Result<Uuid, ApiError> {
    let target = version_of(conn, function_id, version).await?;
    if target.pruned {
        return Err(ApiError::conflict(
            "version_pruned",
            format!(
                "version {version} is older than the versions Slipway retains; its image is gone"
            ),
        ));
    }
    match target.status {
        DeploymentStatus::Active | DeploymentStatus::Inactive | DeploymentStatus::Built
            if target.image_digest.is_some() =>
        {
            Ok(target.id)
        }
        status => Err(ApiError::conflict(
            "version_not_built",
            format!(
                "version {version} has no image (it is {status}); an alias points at a version \
                 that was built"
            ),
        )),
    }
}

/// The other version of a split, if an alias may point at it too.
async fn split(
    conn: &mut sqlx::PgConnection,
    function_id: Uuid,
    weights: Option<(i32, f64)>,
) -> Result<Option<Split>, ApiError> {
    let Some((version, weight)) = weights else {
        return Ok(None);
    };
    let deployment_id = aliasable(conn, function_id, version).await?;
    Ok(Some(Split {
        deployment_id,
        weight,
    }))
}

/// Locks the caller's function for a change of its aliases: one being deleted has none to change.
async fn lock(
    tx: &mut sqlx::PgConnection,
    caller: &Caller,
    function_id: Uuid,
) -> Result<(), ApiError> {
    let function = auth::lock_for_change(tx, caller, function_id).await?;
    if matches!(
        function.status,
        FunctionStatus::PendingDeletion | FunctionStatus::Deleted
    ) {
        return Err(ApiError::conflict(
            "function_not_deployable",
            format!("function is {}; its aliases cannot change", function.status),
        ));
    }
    Ok(())
}

#[tracing::instrument(skip(state, caller))]
pub async fn create(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    name: &str,
    version: i32,
    weights: Option<(i32, f64)>,
) -> Result<AliasRow, ApiError> {
    check_name(name)?;
    let mut tx = state.pool.begin().await?;
    lock(&mut tx, &caller, function_id).await?;
    let deployment_id = aliasable(&mut tx, function_id, version).await?;
    let split = split(&mut tx, function_id, weights).await?;
    if !db::aliases::create(&mut tx, function_id, name, deployment_id, split).await? {
        return Err(ApiError::conflict(
            "alias_exists",
            format!("the function already has an alias {name:?}; PUT it to point it elsewhere"),
        ));
    }
    committed(state, tx, function_id, name).await
}

#[tracing::instrument(skip(state, caller))]
pub async fn point(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    name: &str,
    version: i32,
    weights: Option<(i32, f64)>,
) -> Result<AliasRow, ApiError> {
    let mut tx = state.pool.begin().await?;
    lock(&mut tx, &caller, function_id).await?;
    if db::aliases::get(&mut tx, function_id, name)
        .await?
        .is_none()
    {
        return Err(alias_not_found(name));
    }
    let deployment_id = aliasable(&mut tx, function_id, version).await?;
    let split = split(&mut tx, function_id, weights).await?;
    db::aliases::point(&mut tx, function_id, name, deployment_id, split).await?;
    committed(state, tx, function_id, name).await
}

/// The alias as written by `tx`, once committed; invocations stop using the routes cached
/// before it.
async fn committed(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    function_id: Uuid,
    name: &str,
) -> Result<AliasRow, ApiError> {
    let alias = db::aliases::get(&mut tx, function_id, name)
        .await?
        .ok_or_else(|| alias_not_found(name))?;
    tx.commit().await?;
    state.hot.forget_function(function_id);
    Ok(alias)
}

#[tracing::instrument(skip(state, caller))]
pub async fn delete(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    name: &str,
) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    lock(&mut tx, &caller, function_id).await?;
    if !db::aliases::delete(&mut tx, function_id, name).await? {
        return Err(alias_not_found(name));
    }
    tx.commit().await?;
    state.hot.forget_function(function_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_name_one_other_version_and_a_share_strictly_between_0_and_1() {
        let weights = |entries: &[(&str, f64)]| -> BTreeMap<String, f64> {
            entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        assert_eq!(parse_weights(None, 1).ok(), Some(None));
        assert_eq!(parse_weights(Some(&weights(&[])), 1).ok(), Some(None));
        assert_eq!(
            parse_weights(Some(&weights(&[("2", 0.1)])), 1).ok(),
            Some(Some((2, 0.1)))
        );
        for refused in [
            weights(&[("2", 0.1), ("3", 0.1)]),
            weights(&[("1", 0.5)]),
            weights(&[("two", 0.5)]),
            weights(&[("0", 0.5)]),
            weights(&[("2", 0.0)]),
            weights(&[("2", 1.0)]),
            weights(&[("2", -0.5)]),
        ] {
            assert!(parse_weights(Some(&refused), 1).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn alias_names_are_never_numbers_nor_odd_characters() {
        for good in ["live", "blue-green", "v2_canary", "a", &"x".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "3",
            "2fast",
            "Live",
            "-a",
            "a b",
            "a.b",
            "a@b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
