//! Archives in S3 or any S3-compatible server (path-style addressing, explicit endpoint).
//! Region and credentials come from the environment through aws-config's default chain.

use aws_sdk_s3::{
    Client,
    config::http::HttpResponse,
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
};
use bytes::Bytes;
use std::time::Duration;

use super::{StoreError, check_key};

pub struct S3ArchiveStore {
    client: Client,
    bucket: String,
}

/// Connection problems, timeouts and 5xx are transient; anything else is not.
fn classify<E>(error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => {
            e.raw().status().is_server_error() || e.err().code() == Some("SlowDown")
        }
        _ => false,
    };
    let error = anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(&error));
    if transient {
        StoreError::Unavailable(error)
    } else {
        StoreError::Other(error)
    }
}

impl S3ArchiveStore {
    /// `endpoint` for servers other than AWS (e.g. `http://127.0.0.1:5002`); the region defaults
    /// to us-east-1 when the environment names none.
    pub async fn new(bucket: &str, endpoint: Option<&str>) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        // A hung server must surface as a (retryable) error, not as a job stuck forever; the
        // attempt timeout leaves room for a 50 MiB upload on a slow link.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(300))
            .build();
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .timeout_config(timeouts);
        if shared.region().is_none() {
            config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        if let Some(endpoint) = endpoint {
            // Many S3-compatible servers reject the SDK's default streaming CRC checksums; send
            // and check them only where S3 requires them.
            config = config
                .endpoint_url(endpoint)
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                );
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        check_key(key)?;
        self.put_body(key, ByteStream::from(bytes)).await
    }

    /// Streams the file: the SDK re-reads it from its path on a retry, so nothing is buffered.
    pub async fn put_file(&self, key: &str, source: &std::path::Path) -> Result<(), StoreError> {
        check_key(key)?;
        let body = ByteStream::from_path(source)
            .await
            .map_err(|e| StoreError::Other(e.into()))?;
        self.put_body(key, body).await
    }

    async fn put_body(&self, key: &str, body: ByteStream) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/gzip")
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(key)?;
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(StoreError::NotFound(key.into()));
            }
            Err(e) => return Err(classify(e)),
        };
        let data = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        Ok(data.into_bytes())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }
}
