//! Slipway's common crate: domain types and state machines (`domain`, pure), every SQL statement
//! (`db`), the job contract between enqueuers and the worker (`jobs`), typed configuration
//! (`config`), archive validation (`archive`) and what a Dockerfile may do (`dockerfile`,
//! `build_rules`, `dockerignore`), archive storage (`store`), reading the registry
//! (`registry`), what a git binding may hold (`git`), secrets sealed at rest (`secrets`), the
//! names of Prometheus metrics (`metrics`), and the request-signing protocol the API and the
//! client share (`signing`).
//!
//! Architecture invariant: nothing here talks to BuildKit or a container runtime.

pub mod archive;
pub mod build_rules;
pub mod config;
pub mod db;
pub mod dockerfile;
pub mod dockerignore;
pub mod domain;
pub mod env;
pub mod git;
pub mod integrity;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod registry;
pub mod schedule;
pub mod secrets;
pub mod settle;
pub mod signing;
pub mod store;
pub mod telemetry;
