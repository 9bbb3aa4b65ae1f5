//! The verification use case: the serving version's recorded tag and digest checked at the
//! registry now (with the configured login and its token cache, `registries`), and what was
//! found applied in one transaction: drift reported, or the function Failed when its policy says
//! so.

use std::time::Duration;

use anyhow::Context;
use http::StatusCode;
use slipway_shared::{
    db::{self, functions::FunctionRow},
    domain::{Digest, ImageRef, Serving, Verification},
    integrity::{self, OnTagOverwrite},
};
use uuid::Uuid;

use crate::{AppState, auth::Caller, error::ApiError, signing};

const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the registry said, and the function's serving state after it.
pub struct Verified {
    pub function_id: Uuid,
    pub version: i32,
    pub image: ImageRef,
    pub recorded: Digest,
    pub verification: Verification,
    pub policy: OnTagOverwrite,
    pub serving: Serving,
}

#[tracing::instrument(skip_all, fields(function_id = %function.id))]
pub async fn verify(
    state: &AppState,
    caller: &Caller,
    function: FunctionRow,
) -> Result<Verified, ApiError> {
    let id = function.id;
    // Verification can fail a function (on_tag_overwrite = fail): it changes state.
    signing::require_signature(caller.signature(), function.skip_signing)?;
    let nothing_to_verify = || {
        ApiError::conflict(
            "nothing_to_verify",
            "the function has no version serving; deploy one first",
        )
    };
    let (Some(version), Some(tag), Some(digest)) = (
        function.active_version,
        function.image_tag.as_deref(),
        function.image_digest.as_deref(),
    ) else {
        return Err(nothing_to_verify());
    };
    let image = ImageRef::parse_tagged(tag).context("stored image tag")?;
    let recorded = Digest::parse(digest).context("stored image digest")?;
    let policy =
        OnTagOverwrite::parse(&function.on_tag_overwrite).context("stored on_tag_overwrite")?;

    let registry = state.registries.for_image(&image);
    let verification = tokio::time::timeout(REGISTRY_TIMEOUT, registry.verify(&image, &recorded))
        .await
        .map_err(|_| registry_unavailable(format!("no answer within {REGISTRY_TIMEOUT:?}")))?
        .map_err(|e| registry_unavailable(e.to_string()))?;

    let mut tx = state.pool.begin().await?;
    db::functions::lock(&mut tx, id).await?;
    // A switch between the registry's answer and this lock made the answer stale.
    let still_serving = db::deployments::active_for_function(&mut tx, id)
        .await?
        .is_some_and(|active| active.version == version);
    if !still_serving {
        return Err(ApiError::conflict(
            "changed_during_verification",
            "another version took the traffic while the registry was asked; verify again",
        ));
    }
    let serving = integrity::record(&mut tx, id, &image, &recorded, &verification, policy).await?;
    tx.commit().await?;
    state.hot.forget_function(id);

    Ok(Verified {
        function_id: id,
        version,
        image,
        recorded,
        verification,
        policy,
        serving,
    })
}

fn registry_unavailable(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "registry_unavailable",
        format!("the registry could not be asked: {detail}"),
    )
}
