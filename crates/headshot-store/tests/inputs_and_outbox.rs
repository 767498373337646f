//! Job inputs kept until the job finishes, the webhook outbox, and store secrets, for every
//! `JobStore` implementation; the redb store also across a reopen.

use headshot_core::{CensorType, GenerationJob, JobSettings};
use headshot_store::{
    JobRecord, JobStatus, JobStore, MemoryJobStore, OutputFormat, RedbJobStore, StoreError,
    WebhookDelivery,
};
use serde_json::json;

fn input(seed: u64) -> GenerationJob {
    GenerationJob {
        settings: JobSettings {
            prompt: "portrait".into(),
            safety_checker: Some(CensorType::Blur),
            ..headshot_test_support::settings(seed)
        },
        face_image: (0..=255u8).cycle().take(70_000).collect(),
        // Further photos of the person (a list): one per unit of the seed, each its own bytes,
        // so a job's photos are told apart from its neighbour's.
        more_face_images: (0..seed)
            .map(|i| vec![(seed * 10 + i) as u8; 1000 + i as usize])
            .collect(),
    }
}

fn queued(store: &dyn JobStore) -> JobRecord {
    let id = store.next_id().unwrap();
    JobRecord::queued(
        id,
        json!({"seed": id}),
        format!("p{id}"),
        OutputFormat::Png,
        1,
    )
}

fn inputs_live_until_the_job_finishes(store: &dyn JobStore) {
    let first = queued(store);
    let second = queued(store);
    store.insert_with_input(&first, &input(1)).unwrap();
    store.insert_with_input(&second, &input(2)).unwrap();
    assert_eq!(store.input(first.id).unwrap(), Some(input(1)));
    assert_eq!(store.input(second.id).unwrap(), Some(input(2)));
    let order: Vec<_> = store
        .list_unfinished()
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(order, [first.id, second.id]);

    let mut done = first.clone();
    done.mark_failed("no face");
    let hook = WebhookDelivery::new(done.id, 5, "https://example.com/h".into(), "{}".into());
    store.finish(&done, Some(&hook)).unwrap();
    assert_eq!(store.input(first.id).unwrap(), None);
    assert_eq!(
        store.get(first.id).unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert_eq!(store.input(second.id).unwrap(), Some(input(2)));
    assert_eq!(store.pending_webhooks().unwrap(), vec![hook]);

    let mut ghost = second.clone();
    ghost.id += 1000;
    assert!(matches!(
        store.finish(&ghost, None),
        Err(StoreError::JobNotFound(_))
    ));
}

fn outbox_is_pending_until_acknowledged(store: &dyn JobStore) {
    let mut a = queued(store);
    let mut b = queued(store);
    store.insert_with_input(&a, &input(1)).unwrap();
    store.insert_with_input(&b, &input(2)).unwrap();
    a.mark_failed("no face");
    b.mark_failed("no face");
    let hook_b = WebhookDelivery::new(b.id, 20, "https://example.com/b".into(), "{\"b\":1}".into());
    let hook_a = WebhookDelivery::new(a.id, 10, "https://example.com/a".into(), "{\"a\":1}".into());
    store.finish(&b, Some(&hook_b)).unwrap();
    store.finish(&a, Some(&hook_a)).unwrap();
    // Oldest first, whatever the order of finishing.
    assert_eq!(
        store.pending_webhooks().unwrap(),
        vec![hook_a.clone(), hook_b.clone()]
    );
    store.ack_webhook(&hook_a.id).unwrap();
    store.ack_webhook("msg_unknown").unwrap();
    assert_eq!(store.pending_webhooks().unwrap(), vec![hook_b]);
}

fn secrets_are_set_once(store: &dyn JobStore) {
    assert_eq!(
        store.get_or_init_secret("owner", b"first").unwrap(),
        b"first"
    );
    assert_eq!(
        store.get_or_init_secret("owner", b"second").unwrap(),
        b"first"
    );
    assert_eq!(store.get_or_init_secret("other", b"x").unwrap(), b"x");
}

#[test]
fn memory_inputs() {
    inputs_live_until_the_job_finishes(&MemoryJobStore::new());
}

#[test]
fn memory_outbox() {
    outbox_is_pending_until_acknowledged(&MemoryJobStore::new());
}

#[test]
fn memory_secrets() {
    secrets_are_set_once(&MemoryJobStore::new());
}

#[test]
fn redb_inputs() {
    let dir = tempfile::tempdir().unwrap();
    inputs_live_until_the_job_finishes(&RedbJobStore::open(dir.path().join("j.redb")).unwrap());
}

#[test]
fn redb_outbox() {
    let dir = tempfile::tempdir().unwrap();
    outbox_is_pending_until_acknowledged(&RedbJobStore::open(dir.path().join("j.redb")).unwrap());
}

#[test]
fn redb_secrets() {
    let dir = tempfile::tempdir().unwrap();
    secrets_are_set_once(&RedbJobStore::open(dir.path().join("j.redb")).unwrap());
}

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
