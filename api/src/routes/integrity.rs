//! `POST /api/functions/{id}/verify`: checks the serving version's recorded tag and digest at the
//! registry now, applies what it found (drift reported, or the function Failed), and answers it.

use std::time::Duration;

use anyhow::Context;
use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use slipway_shared::{
    db,
    domain::{Digest, ImageRef, Verification},
    integrity::{self, OnTagOverwrite},
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::OwnedFunction,
    error::ApiError,
    openapi::{Failures, FunctionId},
    signing,
};

const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    function_uuid: Uuid,
    version: i32,
    image_tag: String,
    recorded_digest: String,
    /// Where the tag points now; `null` when the tag is gone.
    current_digest: Option<String>,
    /// `intact`, `image_drift`, `image_tag_overwritten` or `image_not_found`.
    result: &'static str,
    on_tag_overwrite: &'static str,
    state: String,
    state_reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/functions/{id}/verify",
    tag = "functions",
    params(FunctionId),
    responses((status = 200, description = "What the registry holds under the active version's tag, against the recorded digest", body = VerifyResponse), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    OwnedFunction { caller, function }: OwnedFunction,
) -> Result<Json<VerifyResponse>, ApiError> {
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

    let current_digest = match &verification {
        Verification::Intact => Some(recorded.as_str().to_owned()),
        Verification::Drifted { current } | Verification::Lost { current, .. } => {
            current.as_ref().map(|d| d.as_str().to_owned())
        }
    };
    Ok(Json(VerifyResponse {
        function_uuid: id,
        version,
        image_tag: image.tagged(),
        recorded_digest: recorded.as_str().to_owned(),
        current_digest,
        result: verification.code(),
        on_tag_overwrite: policy.as_str(),
        state: serving.state.as_str().to_owned(),
        state_reason: serving.state_reason,
    }))
}

fn registry_unavailable(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "registry_unavailable",
        format!("the registry could not be asked: {detail}"),
    )
}
