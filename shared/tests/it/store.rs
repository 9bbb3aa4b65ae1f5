//! Both archive stores against their real backends: a temporary directory, and an S3-compatible
//! server (moto in development and CI) named by `SLIPWAY_TEST_S3_ENDPOINT`.

use bytes::Bytes;
use slipway_shared::store::{ArchiveStore, StoreError, archive_key};
use uuid::Uuid;

/// The S3 store under test, or `None` (outside CI only) when no server is configured: in CI a
/// missing endpoint must fail the run, never pass it silently.
async fn s3_store() -> Option<ArchiveStore> {
    let Ok(endpoint) = std::env::var("SLIPWAY_TEST_S3_ENDPOINT") else {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!(
                "CI=true but SLIPWAY_TEST_S3_ENDPOINT is unset: the S3 store tests need an \
                 S3-compatible server (e.g. moto on http://127.0.0.1:5002 with bucket slipway-test)"
            );
        }
        eprintln!("skipped: SLIPWAY_TEST_S3_ENDPOINT is unset (set it to run the S3 store tests)");
        return None;
    };
    let bucket = std::env::var("SLIPWAY_TEST_S3_BUCKET").unwrap_or_else(|_| "slipway-test".into());
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
        "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (moto accepts `test`) for the S3 store tests"
    );
    Some(
        ArchiveStore::from_url(&format!("s3://{bucket}"), Some(&endpoint))
            .await
            .expect("the S3 store is built from its URL"),
    )
}

async fn fs_store() -> (tempfile::TempDir, ArchiveStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ArchiveStore::from_url(&format!("file://{}", dir.path().display()), None)
        .await
        .unwrap();
    (dir, store)
}

/// The contract both stores share; every key lives under a fresh prefix so runs never collide.
async fn round_trip(store: &ArchiveStore) {
    let function = Uuid::new_v4();
    let prefix = format!("functions/{function}/");
    let first = archive_key(function, 1);
    let second = archive_key(function, 2);
    assert_eq!(first, format!("{prefix}v1.tar.gz"));

    assert!(!store.exists(&first).await.unwrap());
    assert!(matches!(store.get(&first).await, Err(StoreError::NotFound(key)) if key == first));
    assert!(store.list(&prefix).await.unwrap().is_empty());
    store.delete(&first).await.unwrap();

    let payload: Bytes = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    store.put(&first, payload.clone()).await.unwrap();
    store
        .put(&second, Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert!(store.exists(&first).await.unwrap());
    assert_eq!(store.get(&first).await.unwrap(), payload);
    assert_eq!(
        store.list(&prefix).await.unwrap(),
        [first.clone(), second.clone()]
    );
    // A prefix is not an object, and listing is by prefix, not by directory.
    assert!(
        !store
            .exists(&format!("functions/{function}"))
            .await
            .unwrap()
    );
    assert!(matches!(
        store.get(&format!("functions/{function}")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.list(&format!("{prefix}v1")).await.unwrap(),
        [first.as_str()]
    );
    let everything = store.list("functions/").await.unwrap();
    assert!(everything.contains(&first) && everything.contains(&second));

    store
        .put(&first, Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&first).await.unwrap(),
        Bytes::from_static(b"replaced")
    );
    store.put(&second, Bytes::new()).await.unwrap();
    assert_eq!(store.get(&second).await.unwrap(), Bytes::new());

    store.delete(&first).await.unwrap();
    store.delete(&first).await.unwrap();
    assert!(!store.exists(&first).await.unwrap());
    assert_eq!(store.list(&prefix).await.unwrap(), [second.as_str()]);
    store.delete(&second).await.unwrap();
    assert!(store.list(&prefix).await.unwrap().is_empty());

    for bad in ["", "/abs", "a/../b", "../up", "a//b", "a/", "a/.tmp"] {
        let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey(_)));
        assert!(invalid(store.put(bad, Bytes::new()).await), "put {bad:?}");
        assert!(invalid(store.delete(bad).await), "delete {bad:?}");
        assert!(
            matches!(store.get(bad).await, Err(StoreError::InvalidKey(_))),
            "get {bad:?}"
        );
        assert!(
            matches!(store.exists(bad).await, Err(StoreError::InvalidKey(_))),
            "exists {bad:?}"
        );
    }
}

#[tokio::test]
async fn the_filesystem_store_round_trips_archives() {
    let (_dir, store) = fs_store().await;
    round_trip(&store).await;
}

#[tokio::test]
async fn the_s3_store_round_trips_archives() {
    let Some(store) = s3_store().await else {
        return;
    };
    round_trip(&store).await;
}

#[tokio::test]
async fn the_filesystem_store_leaves_no_temporary_files_and_nothing_outside_its_root() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("store");
    let store = ArchiveStore::from_url(&format!("file://{}", root.display()), None)
        .await
        .unwrap();
    let key = archive_key(Uuid::new_v4(), 7);
    let puts = (0..8).map(|i| store.put(&key, Bytes::from(vec![i; 64 * 1024])));
    for result in futures::future::join_all(puts).await {
        result.unwrap();
    }
    // Concurrent writers: the survivor is one whole write, never a mix.
    let stored = store.get(&key).await.unwrap();
    assert_eq!(stored.len(), 64 * 1024);
    assert!(stored.iter().all(|b| *b == stored[0]));
    let dir = root.join(key.rsplit_once('/').unwrap().0);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["v7.tar.gz"]);
    assert!(store.put("../outside", Bytes::new()).await.is_err());
    let siblings: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert_eq!(siblings.len(), 1, "only the store's root exists beside it");
}

#[tokio::test]
async fn malformed_store_urls_are_refused() {
    for url in [
        "",
        "http://bucket",
        "file://relative/dir",
        "s3://",
        "s3://bucket/sub",
        "/abs/dir",
    ] {
        let error = ArchiveStore::from_url(url, None).await.unwrap_err();
        assert!(error.to_string().contains(url), "{url}: {error}");
    }
    let (_dir, store) = fs_store().await;
    assert!(matches!(store, ArchiveStore::Fs(_)));
    let store = ArchiveStore::from_url("s3://some-bucket/", None)
        .await
        .unwrap();
    assert!(matches!(store, ArchiveStore::S3(ref s) if s.bucket() == "some-bucket"));
}

#[tokio::test]
async fn an_unreachable_s3_server_is_a_transient_error() {
    // Nothing listens on loopback's port 9 (discard).
    let store = ArchiveStore::from_url("s3://nowhere", Some("http://127.0.0.1:9"))
        .await
        .unwrap();
    let error = store
        .get(&archive_key(Uuid::new_v4(), 1))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let error = store
        .put("functions/x/v1.tar.gz", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn a_missing_bucket_is_a_permanent_error() {
    let Ok(endpoint) = std::env::var("SLIPWAY_TEST_S3_ENDPOINT") else {
        // `s3_store` owns the CI rule and the skip line.
        assert!(s3_store().await.is_none());
        return;
    };
    let bucket = format!("missing-{}", Uuid::new_v4().simple());
    let store = ArchiveStore::from_url(&format!("s3://{bucket}"), Some(&endpoint))
        .await
        .unwrap();
    let error = store
        .put("functions/x/v1.tar.gz", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Other(_)), "{error:?}");
}
