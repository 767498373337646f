//! The Redis job store's own guarantees, against a real redis-server per test: nodes sharing
//! one server get unique ids and one secret, a restarted (persistent) server keeps everything,
//! a stopped one is a quick `Remote` error and the store recovers by itself when it returns,
//! namespaces keep deployments apart, and an unreadable record hides no other.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use headshot_store::{JobStore, RedisConfig, RedisJobStore, StoreError, WebhookDelivery};
use headshot_test_support::services::RedisServer;
use support::{input, queued};

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        timeout: Duration::from_millis(500),
        ..RedisConfig::new(server.url())
    }
}

#[test]
fn nodes_sharing_a_server_get_unique_ids_and_one_secret() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let nodes: Vec<Arc<RedisJobStore>> = (0..2)
        .map(|_| Arc::new(RedisJobStore::open(&config(&server)).unwrap()))
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let node = nodes[t % 2].clone();
            std::thread::spawn(move || {
                let ids: Vec<u64> = (0..50).map(|_| node.next_id().unwrap()).collect();
                let secret = node
                    .get_or_init_secret("owner", format!("candidate {t}").as_bytes())
                    .unwrap();
                (ids, secret)
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut secrets = Vec::new();
    for thread in threads {
        let (mut some, secret) = thread.join().unwrap();
        ids.append(&mut some);
        secrets.push(secret);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "ids repeat across nodes");
    secrets.dedup();
    assert_eq!(
        secrets.len(),
        1,
        "nodes disagree on the secret: {secrets:?}"
    );

    // What one node accepted, the other runs and finishes.
    let record = queued(&*nodes[0]);
    nodes[0].insert_with_input(&record, &input(3)).unwrap();
    assert_eq!(nodes[1].input(record.id).unwrap(), Some(input(3)));
    let mut done = record.clone();
    done.mark_failed("no face");
    let hook = WebhookDelivery::new(done.id, 1, "https://example.com/h".into(), "{}".into());
    nodes[1].finish(&done, Some(&hook)).unwrap();
    assert_eq!(nodes[0].get(record.id).unwrap(), Some(done));
    assert_eq!(nodes[0].pending_webhooks().unwrap(), vec![hook]);
}

#[test]
fn a_persistent_server_keeps_records_inputs_outbox_and_ids_across_a_kill() {
    let Some(mut server) = RedisServer::start_persistent() else {
        return;
    };
    let store = RedisJobStore::open(&config(&server)).unwrap();
    let waiting = queued(&store);
    store.insert_with_input(&waiting, &input(2)).unwrap();
    let mut done = queued(&store);
    store.insert_with_input(&done, &input(1)).unwrap();
    done.mark_failed("no face");
    let hook = WebhookDelivery::new(done.id, 1, "https://example.com/h".into(), "{}".into());
    store.finish(&done, Some(&hook)).unwrap();
    store.get_or_init_secret("owner", b"kept").unwrap();
    let last_id = store.next_id().unwrap();

    server.restart();
    // The same store object: its pooled connections died with the server.
    assert_eq!(store.list_unfinished().unwrap(), vec![waiting.clone()]);
    assert_eq!(store.input(waiting.id).unwrap(), Some(input(2)));
    assert_eq!(store.get(done.id).unwrap(), Some(done));
    assert_eq!(store.pending_webhooks().unwrap(), vec![hook]);
    assert_eq!(store.get_or_init_secret("owner", b"new").unwrap(), b"kept");
    assert!(store.next_id().unwrap() > last_id);
}

#[test]
fn a_stopped_server_is_a_quick_remote_error_and_the_store_recovers_when_it_returns() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = RedisJobStore::open(&config(&server)).unwrap();
    let record = queued(&store);
    store.insert(&record).unwrap();

    server.stop();
    for attempt in 0..2 {
        let started = Instant::now();
        let err = store.get(record.id).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, StoreError::Remote { .. }), "{err:?}");
        assert!(
            err.to_string().contains("Redis at redis://127.0.0.1:"),
            "{err}"
        );
        assert!(
            took < Duration::from_secs(3),
            "attempt {attempt} took {took:?}"
        );
        eprintln!("a read from a stopped redis-server failed after {took:?}: {err}");
    }
    let err = RedisJobStore::open(&config(&server)).unwrap_err();
    assert!(matches!(err, StoreError::Remote { .. }), "{err:?}");

    server.restart();
    // Not persistent: the server is back, empty, and the same store object works again.
    assert_eq!(store.get(record.id).unwrap(), None);
    store.insert(&record).unwrap();
    assert_eq!(store.get(record.id).unwrap(), Some(record));
}

#[test]
fn namespaces_keep_deployments_apart() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let blue = RedisJobStore::open(&config(&server)).unwrap();
    let green = RedisJobStore::open(&RedisConfig {
        namespace: "green".into(),
        ..config(&server)
    })
    .unwrap();
    let record = queued(&blue);
    blue.insert(&record).unwrap();
    assert_eq!(green.get(record.id).unwrap(), None);
    assert!(green.list_unfinished().unwrap().is_empty());
    assert_eq!(green.next_id().unwrap(), 1, "green counts its own ids");
}

#[test]
fn an_unreadable_record_hides_no_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisJobStore::open(&config(&server)).unwrap();
    let good = queued(&store);
    store.insert(&good).unwrap();
    let bad = queued(&store);
    store.insert(&bad).unwrap();
    // Overwrite one record with garbage, as a future or broken version might.
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{{headshot}}:job:{}", bad.id))
        .arg("not json")
        .query::<()>(&mut raw)
        .unwrap();
    assert!(matches!(store.get(bad.id), Err(StoreError::Corrupt { .. })));
    assert_eq!(store.list_unfinished().unwrap(), vec![good]);
}

#[test]
fn a_url_that_is_not_redis_is_a_config_error() {
    let err = RedisJobStore::open(&RedisConfig::new("http://127.0.0.1:1/")).unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}
