//! A function's environment at rest. Values are sealed like git secrets (AES-256-GCM under
//! `SLIPWAY_SECRETS_KEY`, bound to their row and column), so a database dump or a backup holds
//! no tenant's credentials; entries marked secret are also never shown again, not even to their
//! owner (Lambda's and Cloud Run's secret references behave the same way).
//!
//! Stored form: `{}` for no variables, `{"$sealed": "<sealed JSON>"}` otherwise. `$` cannot
//! start a variable name, so a row written before sealing (a plain object of strings) is told
//! apart and still read.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::secrets::{SecretError, SecretsKey};

const SEALED: &str = "$sealed";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEnv {
    pub vars: BTreeMap<String, String>,
    /// Names whose values are never shown.
    #[serde(default)]
    pub secret: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("the environment is sealed and this process has no SLIPWAY_SECRETS_KEY")]
    NoKey,
    #[error("the environment cannot be opened: {0}")]
    Sealed(#[from] SecretError),
    #[error("the stored environment is malformed: {0}")]
    Malformed(String),
}

/// Where a function's current environment is stored (`functions.env`).
pub fn function_context(function_id: Uuid) -> String {
    format!("functions.env:{function_id}")
}

/// Where a deployment's environment is stored (`deployments.env`).
pub fn deployment_context(deployment_id: Uuid) -> String {
    format!("deployments.env:{deployment_id}")
}

impl FunctionEnv {
    /// The stored form for the place `context` names.
    pub fn seal(&self, key: Option<&SecretsKey>, context: &str) -> Result<Value, EnvError> {
        if self.vars.is_empty() {
            return Ok(json!({}));
        }
        let key = key.ok_or(EnvError::NoKey)?;
        let plaintext =
            serde_json::to_string(self).map_err(|e| EnvError::Malformed(e.to_string()))?;
        Ok(json!({ SEALED: key.seal(context, &plaintext)? }))
    }

    /// Reads a stored form, sealed or (from before sealing) plain.
    pub fn open(stored: &Value, key: Option<&SecretsKey>, context: &str) -> Result<Self, EnvError> {
        if let Some(sealed) = stored.get(SEALED) {
            let sealed = sealed
                .as_str()
                .ok_or_else(|| EnvError::Malformed(format!("{SEALED} is not a string")))?;
            let key = key.ok_or(EnvError::NoKey)?;
            let plaintext = key.open(context, sealed)?;
            return serde_json::from_str(&plaintext)
                .map_err(|e| EnvError::Malformed(e.to_string()));
        }
        let vars: BTreeMap<String, String> = serde_json::from_value(stored.clone())
            .map_err(|e| EnvError::Malformed(e.to_string()))?;
        Ok(Self {
            vars,
            secret: BTreeSet::new(),
        })
    }

    /// As its owner sees it: secret values are `null`.
    pub fn shown(&self) -> Value {
        self.vars
            .iter()
            .map(|(name, value)| {
                let shown = if self.secret.contains(name) {
                    Value::Null
                } else {
                    Value::String(value.clone())
                };
                (name.clone(), shown)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FunctionEnv {
        FunctionEnv {
            vars: BTreeMap::from([
                ("GREETING".into(), "hello-there".into()),
                ("TOKEN".into(), "s3cr3t-value".into()),
            ]),
            secret: BTreeSet::from(["TOKEN".into()]),
        }
    }

    #[test]
    fn sealed_values_open_only_for_their_row_and_key() {
        let key = SecretsKey::generate().unwrap();
        let id = Uuid::new_v4();
        let stored = sample().seal(Some(&key), &deployment_context(id)).unwrap();
        let text = stored.to_string();
        // Values long enough that random base64 cannot spell them by chance ("hi" once did).
        assert!(
            !text.contains("hello-there")
                && !text.contains("s3cr3t-value")
                && !text.contains("TOKEN"),
            "{text}"
        );
        let opened = FunctionEnv::open(&stored, Some(&key), &deployment_context(id)).unwrap();
        assert_eq!(opened, sample());
        // Another row, another column, another key: nothing opens.
        for context in [deployment_context(Uuid::new_v4()), function_context(id)] {
            assert!(FunctionEnv::open(&stored, Some(&key), &context).is_err());
        }
        let other = SecretsKey::generate().unwrap();
        assert!(FunctionEnv::open(&stored, Some(&other), &deployment_context(id)).is_err());
        assert!(matches!(
            FunctionEnv::open(&stored, None, &deployment_context(id)),
            Err(EnvError::NoKey)
        ));
    }

    #[test]
    fn rows_from_before_sealing_still_read_and_secrets_are_never_shown() {
        let plain = json!({"GREETING": "hi"});
        let opened = FunctionEnv::open(&plain, None, "functions.env:x").unwrap();
        assert_eq!(opened.vars["GREETING"], "hi");
        assert_eq!(
            sample().shown(),
            json!({"GREETING": "hello-there", "TOKEN": null})
        );
        // No variables: nothing to seal, no key needed.
        assert_eq!(FunctionEnv::default().seal(None, "c").unwrap(), json!({}));
        assert!(sample().seal(None, "c").is_err());
    }
}
