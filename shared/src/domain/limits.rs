//! What one function instance may use: memory, CPU and processes. A function asks for limits;
//! the operator's policy fills in what it did not ask for and caps what it did.

use std::fmt;

/// Limits as a function stored them: `None` takes the operator's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestedLimits {
    pub memory_mb: Option<u32>,
    /// Thousandths of a CPU (`"cpu": 0.5` is 500).
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
}

/// Limits an instance runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionLimits {
    pub memory_mb: u32,
    pub cpu_millis: u32,
    pub pids: u32,
}

impl FunctionLimits {
    pub fn memory_bytes(&self) -> i64 {
        i64::from(self.memory_mb) * 1024 * 1024
    }

    /// CPU time in the engine's unit (10⁻⁹ CPUs).
    pub fn nano_cpus(&self) -> i64 {
        i64::from(self.cpu_millis) * 1_000_000
    }

    pub fn cpu(&self) -> f64 {
        f64::from(self.cpu_millis) / 1000.0
    }
}

/// The operator's defaults and maximums (`SLIPWAY_FUNCTION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    pub default: FunctionLimits,
    pub max: FunctionLimits,
}

/// The smallest limits that still run a process at all: below them an instance cannot start,
/// which would look like a platform fault rather than a setting.
const MIN: FunctionLimits = FunctionLimits {
    memory_mb: 16,
    cpu_millis: 10,
    pids: 8,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{name} must be between {min} and {max}, not {value}")]
    OutOfRange {
        name: &'static str,
        value: String,
        min: String,
        max: String,
    },
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            default: FunctionLimits {
                memory_mb: 256,
                cpu_millis: 1000,
                pids: 256,
            },
            max: FunctionLimits {
                memory_mb: 2048,
                cpu_millis: 2000,
                pids: 4096,
            },
        }
    }
}

impl LimitPolicy {
    /// Refuses a request outside `[MIN, max]`; what it leaves out is the default's.
    pub fn validate(&self, requested: &RequestedLimits) -> Result<(), LimitError> {
        let check = |name: &'static str,
                     value: Option<u32>,
                     min: u32,
                     max: u32,
                     show: fn(u32) -> String| {
            match value {
                Some(v) if v < min || v > max => Err(LimitError::OutOfRange {
                    name,
                    value: show(v),
                    min: show(min),
                    max: show(max),
                }),
                _ => Ok(()),
            }
        };
        let plain = |v: u32| v.to_string();
        let cpus = |v: u32| format!("{}", f64::from(v) / 1000.0);
        check(
            "memory_mb",
            requested.memory_mb,
            MIN.memory_mb,
            self.max.memory_mb,
            plain,
        )?;
        check(
            "cpu",
            requested.cpu_millis,
            MIN.cpu_millis,
            self.max.cpu_millis,
            cpus,
        )?;
        check("pids", requested.pids, MIN.pids, self.max.pids, plain)?;
        Ok(())
    }

    /// The limits an instance starts with. A stored value past a maximum the operator lowered
    /// since is capped, never refused: the function keeps running within today's policy.
    pub fn resolve(&self, requested: &RequestedLimits) -> FunctionLimits {
        let pick = |asked: Option<u32>, default: u32, max: u32| asked.unwrap_or(default).min(max);
        FunctionLimits {
            memory_mb: pick(
                requested.memory_mb,
                self.default.memory_mb,
                self.max.memory_mb,
            ),
            cpu_millis: pick(
                requested.cpu_millis,
                self.default.cpu_millis,
                self.max.cpu_millis,
            ),
            pids: pick(requested.pids, self.default.pids, self.max.pids),
        }
    }
}

impl fmt::Display for FunctionLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} MiB, {} CPU, {} processes",
            self.memory_mb,
            self.cpu(),
            self.pids
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_against_the_operators_maximums() {
        let policy = LimitPolicy::default();
        let ok = RequestedLimits {
            memory_mb: Some(64),
            cpu_millis: Some(500),
            pids: Some(32),
        };
        assert_eq!(policy.validate(&ok), Ok(()));
        for bad in [
            RequestedLimits {
                memory_mb: Some(4096),
                ..ok
            },
            RequestedLimits {
                memory_mb: Some(1),
                ..ok
            },
            RequestedLimits {
                cpu_millis: Some(2001),
                ..ok
            },
            RequestedLimits {
                cpu_millis: Some(0),
                ..ok
            },
            RequestedLimits {
                pids: Some(1),
                ..ok
            },
            RequestedLimits {
                pids: Some(100_000),
                ..ok
            },
        ] {
            assert!(policy.validate(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn unset_limits_take_the_default_and_stored_ones_are_capped() {
        let mut policy = LimitPolicy::default();
        let asked = RequestedLimits {
            memory_mb: Some(1024),
            cpu_millis: None,
            pids: None,
        };
        assert_eq!(
            policy.resolve(&asked),
            FunctionLimits {
                memory_mb: 1024,
                cpu_millis: 1000,
                pids: 256
            }
        );
        policy.max.memory_mb = 512;
        assert_eq!(policy.resolve(&asked).memory_mb, 512);
    }
}
