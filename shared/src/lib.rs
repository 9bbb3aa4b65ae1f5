//! Slipway's common crate: domain types and state machines (`domain`, pure), every SQL statement
//! (`db`), the job contract between enqueuers and the worker (`jobs`), typed configuration
//! (`config`), archive validation (`archive`) and archive storage (`store`).
//!
//! Architecture invariant: nothing here talks to BuildKit, a registry or a container runtime.

pub mod archive;
pub mod config;
pub mod db;
pub mod domain;
pub mod jobs;
pub mod store;
pub mod telemetry;
