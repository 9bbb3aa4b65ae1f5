//! HTTP routes, one module per resource. Handlers extract, call one use case, and map the result.

pub mod aliases;
pub mod deletions;
pub mod deployments;
pub mod events;
pub mod functions;
pub mod git;
pub mod health;
pub mod integrity;
pub mod invoke;
pub mod keys;
pub mod log_stream;
pub mod metrics;
pub mod ops;
pub mod runtime;
pub mod schedules;
pub mod v1_functions;

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 with a `Z`, as in the seeds' examples.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Millisecond precision, for phase timings.
pub(crate) fn precise_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
