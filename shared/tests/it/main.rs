//! slipway-shared's integration tests, one binary: archive handling through the public API on
//! archives made by real tools, both archive stores against their real backends, and the ECR
//! registry backend against a real ECR-API server.

mod archive;
mod ecr;
mod store;
