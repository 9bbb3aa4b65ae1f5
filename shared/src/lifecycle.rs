//! Per-function lifecycle hooks (seed 002), as configured at init or with `PUT`, stored as JSON on
//! the function and read by the worker whenever it starts or stops an instance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// `POST /initialize` after an instance starts and before it takes traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer: Option<Hook>,
    /// `GET /pre-stop` before an instance is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Hook>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub timeout_s: u32,
}

impl Hook {
    /// Function Compute's limit for both hooks.
    pub const MAX_TIMEOUT_S: u32 = 600;

    pub fn timeout(self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_s))
    }
}

impl Lifecycle {
    /// Checks the limits; the message is written for the caller.
    pub fn validate(&self) -> Result<(), String> {
        for (name, hook) in [
            ("initializer", self.initializer),
            ("pre_stop", self.pre_stop),
        ] {
            if let Some(hook) = hook
                && !(1..=Hook::MAX_TIMEOUT_S).contains(&hook.timeout_s)
            {
                return Err(format!(
                    "lifecycle.{name}.timeout_s must be from 1 to {}, got {}",
                    Hook::MAX_TIMEOUT_S,
                    hook.timeout_s
                ));
            }
        }
        Ok(())
    }

    /// The stored configuration; a malformed value (never written by Slipway) means no hooks.
    pub fn from_stored(value: Option<&serde_json::Value>) -> Self {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_shape_and_checks_limits() {
        let parsed: Lifecycle = serde_json::from_value(serde_json::json!({
            "initializer": {"timeout_s": 30},
            "pre_stop": {"timeout_s": 10}
        }))
        .unwrap();
        assert_eq!(parsed.initializer, Some(Hook { timeout_s: 30 }));
        assert_eq!(parsed.pre_stop.unwrap().timeout(), Duration::from_secs(10));
        assert!(parsed.validate().is_ok());

        let only_stop: Lifecycle =
            serde_json::from_value(serde_json::json!({"pre_stop": {"timeout_s": 5}})).unwrap();
        assert_eq!(only_stop.initializer, None);

        let zero = Lifecycle {
            initializer: Some(Hook { timeout_s: 0 }),
            pre_stop: None,
        };
        assert!(zero.validate().unwrap_err().contains("initializer"));
        assert!(
            serde_json::from_value::<Lifecycle>(serde_json::json!({"initialiser": {}})).is_err()
        );
        assert_eq!(Lifecycle::from_stored(None), Lifecycle::default());
    }
}
