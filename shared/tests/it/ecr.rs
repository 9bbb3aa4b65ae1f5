//! The ECR backend against a real ECR-API server (moto, which serves ECR beside S3 on the
//! endpoint the S3 tests use). moto stores manifests but has no registry data plane, so images
//! are put with `PutImage` as a push would leave them.
//!
//! One moto difference: retagging drops the image that lost its tag, where ECR keeps it
//! untagged. The drift case therefore keeps the recorded image reachable under a second tag.

use aws_sdk_ecr::Client;
use sha2::{Digest as _, Sha256};
use slipway_shared::{
    domain::{Digest, ImageFailure, ImageRef, Verification},
    registry::{EcrRegistry, Registry},
};
use uuid::Uuid;

fn ecr_endpoint() -> Option<String> {
    match std::env::var("SLIPWAY_TEST_S3_ENDPOINT") {
        Ok(endpoint) => Some(endpoint),
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but SLIPWAY_TEST_S3_ENDPOINT (moto, which also serves ECR) is unset")
        }
        Err(_) => {
            eprintln!("skipped: SLIPWAY_TEST_S3_ENDPOINT is unset");
            None
        }
    }
}

/// A distinct, valid image manifest, and the digest ECR gives it.
fn manifest(seed: &str) -> (String, Digest) {
    let config = format!("sha256:{:x}", Sha256::digest(seed.as_bytes()));
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": config
        },
        "layers": []
    })
    .to_string();
    let digest = Digest::parse(&format!("sha256:{:x}", Sha256::digest(body.as_bytes()))).unwrap();
    (body, digest)
}

async fn put(client: &Client, repository: &str, tag: &str, seed: &str) -> Digest {
    let (body, digest) = manifest(seed);
    client
        .put_image()
        .repository_name(repository)
        .image_manifest(body)
        .image_digest(digest.as_str())
        .image_tag(tag)
        .send()
        .await
        .expect("PutImage");
    digest
}

#[tokio::test]
async fn ecr_reads_tags_and_digests_verifies_and_deletes() {
    let Some(endpoint) = ecr_endpoint() else {
        return;
    };
    let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let ecr = EcrRegistry::new(host, Some(&endpoint));
    let client = ecr.client().await.clone();
    let registry = Registry::Ecr(ecr);
    let repository = format!("slipway-it/{}", Uuid::new_v4().simple());
    let image = ImageRef::parse_tagged(&format!("{host}/{repository}:v1")).unwrap();

    // Nothing yet, not even the repository: "not there", never an error.
    assert_eq!(registry.manifest_digest(&image).await.unwrap(), None);
    client
        .create_repository()
        .repository_name(&repository)
        .send()
        .await
        .expect("CreateRepository");

    let recorded = put(&client, &repository, "v1", "one").await;
    assert_eq!(
        registry.manifest_digest(&image).await.unwrap(),
        Some(recorded.clone())
    );
    assert_eq!(
        registry.verify(&image, &recorded).await.unwrap(),
        Verification::Intact
    );

    // The tag moves; the recorded image stays (under another tag here, see above): drift.
    put(&client, &repository, "pinned", "one").await;
    let moved = put(&client, &repository, "v1", "two").await;
    assert_ne!(moved, recorded);
    assert_eq!(
        registry.verify(&image, &recorded).await.unwrap(),
        Verification::Drifted {
            current: Some(moved.clone())
        }
    );

    // The recorded image goes: lost, and the tag says where it points now.
    registry.delete_manifest(&image, &recorded).await.unwrap();
    registry
        .delete_manifest(&image, &recorded)
        .await
        .expect("deleting twice is fine");
    assert_eq!(
        registry.verify(&image, &recorded).await.unwrap(),
        Verification::Lost {
            failure: ImageFailure::TagOverwritten,
            current: Some(moved.clone())
        }
    );

    // The tag's image goes too: not found.
    registry.delete_manifest(&image, &moved).await.unwrap();
    assert_eq!(
        registry.verify(&image, &recorded).await.unwrap(),
        Verification::Lost {
            failure: ImageFailure::NotFound,
            current: None
        }
    );

    let credentials = registry.push_credentials().await.unwrap().unwrap();
    assert_eq!(credentials.username, "AWS");
    assert!(!credentials.password.is_empty());
}
