//! The embedded conversation store (SPEC §5 Storage): the shared suite
//! (`store_suite`) on the SQLite file, the file reopened, and a file that is not a
//! database.

mod store_suite;

use std::sync::Arc;

use mag_server::store::embedded::EmbeddedStore;
use mag_server::store::{Store, StoreError, new_conversation_id};
use store_suite::*;
// ---------------------------------------------------------------------------------------
// Embedded.

#[tokio::test]
async fn embedded_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    suite(async || -> Store {
        n += 1;
        let path = dir
            .path()
            .join(format!("suite{n}/nested/conversations.sqlite3"));
        let store: Store = Arc::new(EmbeddedStore::open(&path).expect("open the embedded store"));
        store
    })
    .await;
}

/// The data is in the file: a store opened again on it reads everything back, and goes on.
#[tokio::test]
async fn embedded_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/conversations.sqlite3");
    let id = new_conversation_id();
    let r1 = first_round(&id, "alice", 0, "a weather tool");
    let r2 = after(&r1, 1_000, "more");
    {
        let store: Store = Arc::new(EmbeddedStore::open(&path).unwrap());
        assert_eq!(store.backend(), "embedded");
        assert!(store.location().contains(&path.display().to_string()));
        store.save_round(&r1).await.unwrap();
        store.save_round(&r2).await.unwrap();
        // WAL journal mode: the log next to the file while it is open.
        assert!(path.with_extension("sqlite3-wal").is_file());
    }
    assert!(path.is_file());
    let store: Store = Arc::new(EmbeddedStore::open(&path).expect("reopen"));
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2]));
    let r3 = after(&r2, 2_000, "after reopening");
    store.save_round(&r3).await.unwrap();
    drop(store);
    let store: Store = Arc::new(EmbeddedStore::open(&path).expect("reopen again"));
    assert_eq!(get(&store, &id).await.unwrap(), record_of(&[&r1, &r2, &r3]));
    assert_eq!(store.list(&query(None, 10, 0)).await.unwrap().len(), 1);
}

/// A file that is not a database is refused with a message naming it.
#[tokio::test]
async fn embedded_refuses_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conversations.sqlite3");
    std::fs::write(
        &path,
        "this is not SQLite, just some text that is long enough ".repeat(100),
    )
    .unwrap();
    let err = EmbeddedStore::open(&path).expect_err("a text file");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // A folder where the file should be.
    let err = EmbeddedStore::open(dir.path()).expect_err("a folder");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
