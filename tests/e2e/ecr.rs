//! Function images in Amazon ECR, against moto's ECR API (the S3 server of scripts/test.sh
//! serves it too): with `SLIPWAY_REGISTRY` carrying a path, as deploy/terraform sets it, each
//! function's repository is named below that path, created before its first push, and read and
//! pruned under the same name. moto has no registry (v2) API to push through, so the image is
//! put with ECR's own `PutImage`.

use slipway_shared::{
    domain::{Digest, FunctionName, ImageRef},
    registry::EcrRegistry,
};
use slipway_tests::required_env;
use uuid::Uuid;

const SERVER: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

#[tokio::test]
async fn a_functions_repository_is_created_below_the_registry_path_and_used_by_that_name()
-> anyhow::Result<()> {
    let endpoint = required_env("SLIPWAY_TEST_S3_ENDPOINT");
    let namespace = format!(
        "slipway-{}/functions",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let registry = EcrRegistry::new(&format!("{SERVER}/{namespace}"), Some(&endpoint));
    let function_id = Uuid::new_v4();
    let image = ImageRef::for_version(
        registry.host(),
        &FunctionName::parse("hello")?,
        function_id,
        1,
    );
    let repository = format!("{namespace}/{}", image.repository);

    // Nothing there yet: reads say so, and pruning what is not there succeeds.
    assert_eq!(registry.manifest_digest(&image).await?, None);

    registry.ensure_repository(&image).await?;
    registry.ensure_repository(&image).await?;
    let client = registry.client().await;
    let described = client
        .describe_repositories()
        .repository_names(&repository)
        .send()
        .await?;
    let created = described
        .repositories()
        .first()
        .expect("the function's repository exists under the registry path");
    assert_eq!(
        created
            .image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true),
        "{created:?}"
    );

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": format!("sha256:{}", "a".repeat(64)),
        },
        "layers": [],
    })
    .to_string();
    let put = client
        .put_image()
        .repository_name(&repository)
        .image_manifest(&manifest)
        .image_tag(&image.tag)
        .send()
        .await?;
    let digest = Digest::parse(
        put.image()
            .and_then(|i| i.image_id())
            .and_then(|id| id.image_digest())
            .expect("PutImage answers the digest"),
    )?;

    assert_eq!(
        registry.manifest_digest(&image).await?,
        Some(digest.clone())
    );
    assert!(registry.manifest_exists(&image, &digest).await?);
    registry.delete_manifest(&image, &digest).await?;
    assert!(!registry.manifest_exists(&image, &digest).await?);
    registry.delete_manifest(&image, &digest).await?;

    // The engine logs in to the server, not to the path.
    assert_eq!(registry.push_credentials().await?.server, SERVER);

    client
        .delete_repository()
        .repository_name(&repository)
        .force(true)
        .send()
        .await?;
    Ok(())
}
