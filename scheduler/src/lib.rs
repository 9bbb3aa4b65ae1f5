//! Slipway's scheduler: cron sweeps that find work (idle functions, stale functions, quotas,
//! grace-period purges, digest checks) with set-based SQL and enqueue the jobs that do it.
//!
//! Architecture invariant: the scheduler never does the work itself.
//!
//! No sweep exists yet; they arrive with the scheduler issue. Until then the binary refuses to
//! start rather than pretend to schedule anything.
