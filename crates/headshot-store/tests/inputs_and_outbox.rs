//! Job inputs, the webhook outbox and secrets kept by the redb store across a reopen, and old
//! records read without newer fields (the contract of every store is in job_store_contract.rs).

mod support;

use headshot_store::{JobRecord, JobStore, MemoryJobStore, RedbJobStore, WebhookDelivery};
use support::{input, queued};

#[test]
fn redb_reopen_keeps_inputs_outbox_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let (waiting, hook) = {
        let store = RedbJobStore::open(&path).unwrap();
        let waiting = queued(&store);
        store.insert_with_input(&waiting, &input(7)).unwrap();
        let mut done = queued(&store);
        store.insert_with_input(&done, &input(8)).unwrap();
        done.mark_failed("no face");
        let hook = WebhookDelivery::new(done.id, 1, "https://example.com/h".into(), "{}".into());
        store.finish(&done, Some(&hook)).unwrap();
        store.get_or_init_secret("owner", b"kept").unwrap();
        (waiting, hook)
    };
    let store = RedbJobStore::open(&path).unwrap();
    assert_eq!(store.list_unfinished().unwrap(), vec![waiting.clone()]);
    assert_eq!(store.input(waiting.id).unwrap(), Some(input(7)));
    assert_eq!(store.pending_webhooks().unwrap(), vec![hook]);
    assert_eq!(store.get_or_init_secret("owner", b"new").unwrap(), b"kept");
}

#[test]
fn records_with_an_owner_round_trip_and_old_ones_read_without() {
    let store = MemoryJobStore::new();
    let mut r = queued(&store);
    r.owner = Some("fingerprint".into());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["owner"], "fingerprint");
    let back: JobRecord = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, r);
    let mut old = json;
    old.as_object_mut().unwrap().remove("owner");
    let old: JobRecord = serde_json::from_value(old).unwrap();
    assert_eq!(old.owner, None);
}
