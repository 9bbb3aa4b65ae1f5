//! slipway-shared's integration tests, one binary: archive handling through the public API on
//! archives made by real tools, and both archive stores against their real backends.

mod archive;
mod store;
