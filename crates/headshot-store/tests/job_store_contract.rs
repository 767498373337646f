//! What every `JobStore` promises, run against each of them: memory, redb (a temporary file)
//! and Redis (a real redis-server per test; skipped loudly where it is not installed, required
//! under CI). Tests of one store only (reopening a file, two nodes on one server) live in that
//! store's own test file.

mod support;

use std::time::{Duration, SystemTime};

use headshot_store::{
    JobStatus, JobStore, MemoryJobStore, RedbJobStore, RedisConfig, RedisJobStore, StoreError,
    WebhookDelivery,
};
use headshot_test_support::services::RedisServer;
use support::{input, queued, record};

/// A store under test and what must outlive it (its folder, its server).
struct Backend {
    store: Box<dyn JobStore>,
    _keep: Box<dyn std::any::Any>,
}

fn memory() -> Option<Backend> {
    Some(Backend {
        store: Box::new(MemoryJobStore::new()),
        _keep: Box::new(()),
    })
}

fn redb() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    Some(Backend {
        store: Box::new(RedbJobStore::open(dir.path().join("jobs.redb")).unwrap()),
        _keep: Box::new(dir),
    })
}

fn redis() -> Option<Backend> {
    let server = RedisServer::start()?;
    Some(Backend {
        store: Box::new(RedisJobStore::open(&RedisConfig::new(server.url())).unwrap()),
        _keep: Box::new(server),
    })
}

/// One test per contract case for `backend`, in a module named after it.
macro_rules! contract {
    ($backend:ident: $($case:ident),+) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    if let Some(backend) = super::$backend() {
                        super::$case(&*backend.store);
                    }
                }
            )+
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),+) => {
        contract!(memory: $($case),+);
        contract!(redb: $($case),+);
        contract!(redis: $($case),+);
    };
}

every_backend!(
    round_trip,
    ids_increase,
    unfinished_and_expiry,
    inputs_live_until_the_job_finishes,
    outbox_is_pending_until_acknowledged,
    secrets_are_set_once
);

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
