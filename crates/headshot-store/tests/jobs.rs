use std::time::{Duration, SystemTime};

use headshot_store::{
    JobRecord, JobStatus, JobStore, MemoryJobStore, OutputFormat, RedbJobStore, StoreError,
};
use serde_json::json;

fn record(store: &dyn JobStore) -> JobRecord {
    let id = store.next_id().unwrap();
    let mut r = JobRecord::queued(
        id,
        json!({"prompt": "portrait", "seed": 42, "samples": 1}),
        format!("prefix{id}"),
        OutputFormat::Png,
        1,
    );
    r.webhook = Some("https://example.com/hook".into());
    r.track_id = Some(json!("abc-1"));
    r
}

fn round_trip(store: &dyn JobStore) {
    let mut r = record(store);
    store.insert(&r).unwrap();
    assert_eq!(store.get(r.id).unwrap().unwrap(), r);

    r.status = JobStatus::Processing;
    store.update(&r).unwrap();
    assert_eq!(
        store.get(r.id).unwrap().unwrap().status,
        JobStatus::Processing
    );

    r.mark_success(
        vec![format!("prefix{}-0.png", r.id)],
        false,
        Duration::from_secs(3),
    );
    store.update(&r).unwrap();
    assert_eq!(store.get(r.id).unwrap().unwrap(), r);

    assert_eq!(store.get(r.id + 1000).unwrap(), None);
    let mut ghost = r.clone();
    ghost.id += 1000;
    assert!(matches!(
        store.update(&ghost),
        Err(StoreError::JobNotFound(_))
    ));
}

fn ids_increase(store: &dyn JobStore) {
    let a = store.next_id().unwrap();
    let b = store.next_id().unwrap();
    assert!(b > a);
    // An inserted id above the counter pushes the counter past it.
    let mut r = record(store);
    r.id = b + 10;
    store.insert(&r).unwrap();
    assert!(store.next_id().unwrap() > b + 10);
}

fn unfinished_and_expiry(store: &dyn JobStore) {
    let queued = record(store);
    store.insert(&queued).unwrap();
    let mut failed = record(store);
    failed.mark_failed("no face detected");
    store.insert(&failed).unwrap();
    let mut done = record(store);
    done.mark_success(vec![], true, Duration::from_secs(1));
    store.insert(&done).unwrap();

    let unfinished: Vec<_> = store
        .list_unfinished()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(unfinished, [queued.id]);

    // Nothing finished before a cutoff in the past.
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert!(store.list_expired(past).unwrap().is_empty());
    assert!(store.purge_expired(past).unwrap().is_empty());

    let future = SystemTime::now() + Duration::from_secs(3600);
    let mut expired = store.list_expired(future).unwrap();
    expired.sort();
    assert_eq!(expired, [failed.id, done.id]);
    let purged = store.purge_expired(future).unwrap();
    assert_eq!(purged.len(), 2);
    assert_eq!(store.get(failed.id).unwrap(), None);
    assert_eq!(store.get(done.id).unwrap(), None);
    // Unfinished jobs never expire by age.
    assert!(store.get(queued.id).unwrap().is_some());
}

#[test]
fn redb_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&RedbJobStore::open(dir.path().join("jobs.redb")).unwrap());
}

#[test]
fn redb_ids_increase() {
    let dir = tempfile::tempdir().unwrap();
    ids_increase(&RedbJobStore::open(dir.path().join("jobs.redb")).unwrap());
}

#[test]
fn redb_unfinished_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    unfinished_and_expiry(&RedbJobStore::open(dir.path().join("jobs.redb")).unwrap());
}

#[test]
fn memory_round_trip() {
    round_trip(&MemoryJobStore::new());
}

#[test]
fn memory_ids_increase() {
    ids_increase(&MemoryJobStore::new());
}

#[test]
fn memory_unfinished_and_expiry() {
    unfinished_and_expiry(&MemoryJobStore::new());
}

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
