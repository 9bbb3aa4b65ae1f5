//! The registries `POST /api/functions/{id}/verify` reads: one client per registry host for the
//! life of the process, so the configured login and the bearer tokens a registry's token service
//! issues (cached per scope inside the client) serve every verification, not just one.

use std::{collections::HashMap, sync::Mutex};

use slipway_shared::{
    config::ApiConfig,
    domain::ImageRef,
    registry::{OciRegistry, Registry, RegistryLogin},
};

pub struct RegistryClients {
    /// Set when images live in ECR: every image is read through ECR's API.
    ecr: Option<Registry>,
    http: reqwest::Client,
    login: Option<RegistryLogin>,
    insecure: Vec<String>,
    /// Hosts come from the tags workers recorded, so there are as many as registries Slipway
    /// has pushed to.
    by_host: Mutex<HashMap<String, Registry>>,
}

impl RegistryClients {
    pub fn new(config: &ApiConfig, http: reqwest::Client) -> anyhow::Result<Self> {
        Ok(Self {
            ecr: config.ecr.as_ref().map(Registry::from_config).transpose()?,
            http,
            login: config.registry_login.clone(),
            insecure: config.insecure_registries.clone(),
            by_host: Mutex::default(),
        })
    }

    /// The client for `image`'s registry; clones share its token cache.
    pub fn for_image(&self, image: &ImageRef) -> Registry {
        if let Some(ecr) = &self.ecr {
            return ecr.clone();
        }
        let mut by_host = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        by_host
            .entry(image.registry.clone())
            .or_insert_with(|| {
                Registry::Oci(
                    OciRegistry::with_client(&image.registry, self.http.clone())
                        .with_login(self.login.clone())
                        .with_insecure(&self.insecure),
                )
            })
            .clone()
    }
}
