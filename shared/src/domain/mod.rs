//! Newtypes and state machines: pure, no I/O, no serde. Everything here is parsed at the edge and
//! trusted inside.

mod api_key;
mod deletion;
mod function_name;
mod image;
mod limits;
mod serving;
mod status;

pub use api_key::{ApiKey, ApiKeyHash, SigningSecret};
pub use deletion::{DeletionReason, days_remaining};
pub use function_name::{FunctionName, FunctionNameError};
pub use image::{Digest, DigestError, ImageRef, PinnedImage, Verification};
pub use limits::{FunctionLimits, LimitError, LimitPolicy, RequestedLimits};
pub use serving::{
    ImageFailure, InstanceFailure, Serving, ServingEvent, ServingState, UpdateStatus,
};
pub use status::{
    DeploymentEvent, DeploymentStatus, FunctionEvent, FunctionStatus, IllegalTransition,
    PipelineStep, UnknownStatus,
};
