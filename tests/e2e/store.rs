//! Both archive stores against their real backends: the S3 server the test script starts, and a
//! directory.

use bytes::Bytes;
use slipway_shared::store::{ArchiveStore, StoreError};
use slipway_tests::required_env;
use uuid::Uuid;

async fn round_trip(store: &ArchiveStore) -> anyhow::Result<()> {
    let prefix = format!("functions/{}/", Uuid::new_v4());
    let key = format!("{prefix}v1.tar.gz");
    let other = format!("{prefix}v2.tar.gz");
    assert!(!store.exists(&key).await?);
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::NotFound(_))
    ));

    store.put(&key, Bytes::from_static(b"first")).await?;
    store.put(&other, Bytes::from_static(b"second")).await?;
    assert!(store.exists(&key).await?);
    assert_eq!(store.get(&key).await?, Bytes::from_static(b"first"));
    assert_eq!(store.list(&prefix).await?, vec![key.clone(), other.clone()]);

    store.put(&key, Bytes::from_static(b"replaced")).await?;
    assert_eq!(store.get(&key).await?, Bytes::from_static(b"replaced"));

    store.delete(&key).await?;
    store.delete(&key).await?; // deleting twice is fine: purges are retried
    assert!(!store.exists(&key).await?);
    assert_eq!(store.list(&prefix).await?, vec![other.clone()]);
    store.delete(&other).await?;
    assert!(store.list(&prefix).await?.is_empty());

    for bad in ["/abs", "a/../b", ""] {
        assert!(
            matches!(
                store.put(bad, Bytes::new()).await,
                Err(StoreError::InvalidKey(_))
            ),
            "{bad}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_s3_store_round_trips_archives() -> anyhow::Result<()> {
    let endpoint = required_env("SLIPWAY_TEST_S3_ENDPOINT");
    let bucket = required_env("SLIPWAY_TEST_S3_BUCKET");
    let store = ArchiveStore::from_url(&format!("s3://{bucket}"), Some(&endpoint)).await?;
    round_trip(&store).await
}

#[tokio::test]
async fn the_filesystem_store_round_trips_archives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = ArchiveStore::from_url(&format!("file://{}", dir.path().display()), None).await?;
    round_trip(&store).await
}

#[tokio::test]
async fn an_unreachable_s3_server_is_a_transient_error() -> anyhow::Result<()> {
    // Nothing listens on port 9 (discard) on loopback here.
    let store = ArchiveStore::from_url("s3://nowhere", Some("http://127.0.0.1:9")).await?;
    let error = store.get("functions/x/v1.tar.gz").await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    Ok(())
}
