//! Slipway's common crate: domain types and state machines (`domain`, pure), every SQL statement
//! (`db`), the job contract between enqueuers and the worker (`jobs`), typed configuration
//! (`config`), archive validation (`archive`) and what a Dockerfile may do (`dockerfile`,
//! `build_rules`, `dockerignore`), archive storage (`store`), reading the registry
//! (`registry`), what a git binding may hold (`git`), secrets sealed at rest (`secrets`), the
//! names of Prometheus metrics (`metrics`), and the request-signing protocol the API and the
//! client share (`signing`).
//!
//! Feature `server` (default) gates everything but `signing` and `dockerignore`, and with it
//! sqlx, apalis, the AWS SDKs, metrics and logging: the client (`slipway` built with
//! `--no-default-features`) depends on this crate without it, so it links none of them.
//!
//! Architecture invariant: nothing here talks to BuildKit or a container runtime.

/// Every server binary (api, worker, scheduler, `slipway dev`) links this crate with `server`,
/// so they all allocate with mimalloc: under load the invocation proxy spent a fifth of its
/// time in glibc's malloc and free (issue 17's profile). The client leaves it out.
#[cfg(feature = "server")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "server")]
pub mod archive;
#[cfg(feature = "server")]
pub mod build_rules;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod dockerfile;
pub mod dockerignore;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod env;
#[cfg(feature = "server")]
pub mod git;
#[cfg(feature = "server")]
pub mod integrity;
#[cfg(feature = "server")]
pub mod jobs;
#[cfg(feature = "server")]
pub mod lifecycle;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod schedule;
#[cfg(feature = "server")]
pub mod secrets;
#[cfg(feature = "server")]
pub mod settle;
pub mod signing;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod templates;
