//! Writing images to the registry: pushing through the Docker engine. Reading and deleting
//! manifests is `slipway_shared::registry`, which the api uses too (digest verification).

mod engine_push;

pub use engine_push::{engine_credentials, push_through_engine};
pub use slipway_shared::registry::{Registry, RegistryError};
