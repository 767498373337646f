//! The redb job store's own guarantees: a reopened file keeps records and ids, errors name the
//! file, ids stay unique across threads, and a corrupt record hides no other (the contract of
//! every store is in job_store_contract.rs).

mod support;

use std::time::Duration;

use headshot_store::{JobStore, RedbJobStore, StoreError};
use serde_json::json;
use support::record;

#[test]
fn redb_reopen_keeps_records_and_continues_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let (finished, last_id) = {
        let store = RedbJobStore::open(&path).unwrap();
        let mut r = record(&store);
        // Numbers, strings and nested values in track_id are echoed exactly.
        r.track_id = Some(json!({"n": 18446744073709551615u64, "s": "x"}));
        r.mark_success(
            vec![format!("prefix{}-0.png", r.id)],
            false,
            Duration::from_millis(2500),
        );
        store.insert(&r).unwrap();
        let last = store.next_id().unwrap();
        (r, last)
    };
    let store = RedbJobStore::open(&path).unwrap();
    assert_eq!(store.get(finished.id).unwrap().unwrap(), finished);
    assert!(store.next_id().unwrap() > last_id);
}

#[test]
fn redb_open_in_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RedbJobStore::open(dir.path().join("nope/jobs.redb")).unwrap_err();
    assert!(err.to_string().contains("jobs.redb"), "{err}");
}

#[test]
fn redb_ids_are_unique_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(RedbJobStore::open(dir.path().join("jobs.redb")).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| store.next_id().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
}

#[test]
fn redb_a_corrupt_record_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let store = RedbJobStore::open(&path).unwrap();
    let good = record(&store);
    store.insert(&good).unwrap();
    drop(store);
    {
        // Write garbage under another id, as a future or broken version might.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("jobs"))
                .unwrap();
            t.insert(good.id + 1, b"not json".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = RedbJobStore::open(&path).unwrap();
    assert!(matches!(
        store.get(good.id + 1),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.list_unfinished().unwrap(), vec![good]);
}
