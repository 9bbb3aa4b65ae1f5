//! Digest integrity: applying what a registry verification found to a function that serves (or
//! served, if Inactive) its recorded tag + digest. Shared by the api's on-demand verify and the
//! worker's pre-restart check, so both decide the same way.
//!
//! Slipway never runs a bare tag, so a tag moved to another digest harms nothing while the
//! recorded digest exists: by default the function keeps serving it and the drift is reported.
//! The `fail` policy follows seed 001 to the letter instead. A recorded digest that is gone fails
//! the function either way.

use chrono::Utc;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db,
    domain::{Digest, ImageFailure, ImageRef, Serving, ServingEvent, Verification},
};

/// What to do when the tag moved but the recorded digest still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTagOverwrite {
    Keep,
    Fail,
}

impl OnTagOverwrite {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "keep" => Some(Self::Keep),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Fail => "fail",
        }
    }
}

/// The drift report stored on the function and shown by the API.
pub fn drift_report(
    image: &ImageRef,
    recorded: &Digest,
    current: Option<&Digest>,
) -> serde_json::Value {
    json!({
        "tag": image.tagged(),
        "recorded_digest": recorded.as_str(),
        "current_digest": current.map(Digest::as_str),
        "detected_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The event a verification of the serving image calls for, if any.
pub fn failure_of(
    image: &ImageRef,
    verification: &Verification,
    policy: OnTagOverwrite,
) -> Option<ServingEvent> {
    match verification {
        Verification::Intact => None,
        Verification::Drifted { .. } if policy == OnTagOverwrite::Keep => None,
        Verification::Drifted { current } => Some(ServingEvent::ImageLost {
            failure: ImageFailure::TagOverwritten,
            detail: format!(
                "{} now points at {} (policy on_tag_overwrite=fail)",
                image.tagged(),
                current.as_ref().map_or("nothing", Digest::as_str)
            ),
        }),
        Verification::Lost { failure, current } => Some(ServingEvent::ImageLost {
            failure: *failure,
            detail: match current {
                Some(current) => format!(
                    "the recorded digest is gone from the registry and {} now points at {current}",
                    image.tagged()
                ),
                None => format!(
                    "the recorded digest and the tag {} are both gone from the registry",
                    image.tagged()
                ),
            },
        }),
    }
}

/// Records the verification of the function's serving image and applies its consequence. Run
/// under the function's lock.
pub async fn record(
    conn: &mut PgConnection,
    function_id: Uuid,
    image: &ImageRef,
    recorded: &Digest,
    verification: &Verification,
    policy: OnTagOverwrite,
) -> anyhow::Result<Serving> {
    let drift = match verification {
        Verification::Intact => None,
        Verification::Drifted { current } | Verification::Lost { current, .. } => {
            Some(drift_report(image, recorded, current.as_ref()))
        }
    };
    db::functions::record_verification(conn, function_id, drift.as_ref()).await?;
    match failure_of(image, verification, policy) {
        Some(event) => db::functions::transition_serving(conn, function_id, &event).await,
        None => db::functions::serving(conn, function_id).await,
    }
}
