//! `POST /api/functions/{id}/verify`: the serving version's recorded tag and digest checked at the
//! registry now (`crate::integrity`), and what was found.

use axum::{Json, extract::State};
use serde::Serialize;
use slipway_shared::domain::Verification;
use uuid::Uuid;

use crate::{
    AppState,
    auth::OwnedFunction,
    error::ApiError,
    integrity,
    openapi::{Failures, FunctionId},
};

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
    let verified = integrity::verify(&state, &caller, function).await?;
    let current_digest = match &verified.verification {
        Verification::Intact => Some(verified.recorded.as_str().to_owned()),
        Verification::Drifted { current } | Verification::Lost { current, .. } => {
            current.as_ref().map(|d| d.as_str().to_owned())
        }
    };
    Ok(Json(VerifyResponse {
        function_uuid: verified.function_id,
        version: verified.version,
        image_tag: verified.image.tagged(),
        recorded_digest: verified.recorded.as_str().to_owned(),
        current_digest,
        result: verified.verification.code(),
        on_tag_overwrite: verified.policy.as_str(),
        state: verified.serving.state.as_str().to_owned(),
        state_reason: verified.serving.state_reason,
    }))
}
