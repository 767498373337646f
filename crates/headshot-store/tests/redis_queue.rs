//! The shared job queue on Redis Streams, against a real redis-server per test: claim, keep
//! alive and acknowledge; a worker that dies leaves its entry to another after the visibility
//! timeout; a job is given up after its last allowed delivery; admission holds the shared cap
//! under concurrent submits on two nodes; one stream per model set; a stopped server is a
//! quick error the queue recovers from by itself; a worker's progress report reaches another
//! node, aged, and lapses by itself; and consumers gone with nothing pending are forgotten.

use std::sync::Arc;
use std::time::{Duration, Instant};

use headshot_core::Progress;
use headshot_store::{
    Admission, Delivery, JobQueue, QueueConfig, RedisConfig, RedisJobQueue, StoreError,
    PROGRESS_LAPSE,
};
use headshot_test_support::services::RedisServer;

/// A short visibility timeout, so reclaims happen within a test.
const VISIBILITY: Duration = Duration::from_millis(400);

fn redis(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        timeout: Duration::from_millis(500),
        ..RedisConfig::new(server.url())
    }
}

/// A node claiming from `model_sets`, named `consumer`.
fn node(server: &RedisServer, consumer: &str, model_sets: &[&str]) -> RedisJobQueue {
    RedisJobQueue::open(
        &redis(server),
        QueueConfig {
            consumer: consumer.into(),
            visibility_timeout: VISIBILITY,
            max_queued: 10,
            ..QueueConfig::new(model_sets.iter().copied())
        },
    )
    .unwrap()
}

#[test]
fn a_claimed_job_is_kept_alive_and_removed_by_its_ack() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let worker = node(&server, "a", &["default"]);
    let other = node(&server, "b", &["default"]);
    assert_eq!(
        worker.enqueue("default", 7).unwrap(),
        Admission::Accepted { backlog: 1 }
    );
    let claimed = worker.claim(4, Duration::from_millis(100)).unwrap();
    assert_eq!(claimed.len(), 1);
    let delivery = &claimed[0];
    assert_eq!((delivery.job_id, delivery.deliveries), (7, 1));
    assert!(!delivery.is_exhausted());

    // Kept alive for longer than the visibility timeout: nobody else gets it.
    let until = Instant::now() + VISIBILITY * 3;
    while Instant::now() < until {
        assert!(worker.keep_alive(delivery).unwrap());
        assert!(other
            .claim(4, Duration::from_millis(100))
            .unwrap()
            .is_empty());
    }
    assert_eq!(worker.backlog().unwrap(), 1, "a running job still counts");

    worker.ack(delivery).unwrap();
    assert_eq!(worker.backlog().unwrap(), 0);
    worker.ack(delivery).unwrap();
    assert_eq!(worker.backlog().unwrap(), 0, "a second ack counts nothing");
    assert!(
        !worker.keep_alive(delivery).unwrap(),
        "an acked entry has no claim"
    );
    std::thread::sleep(VISIBILITY * 2);
    assert!(other
        .claim(4, Duration::from_millis(100))
        .unwrap()
        .is_empty());
    assert!(worker.claim(4, Duration::ZERO).unwrap().is_empty());
}

#[test]
fn a_dead_workers_job_is_reclaimed_by_another_after_the_visibility_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dying = node(&server, "dying", &["default"]);
    let survivor = node(&server, "survivor", &["default"]);
    dying.enqueue("default", 1).unwrap();
    let lost = dying
        .claim(1, Duration::from_millis(100))
        .unwrap()
        .remove(0);
    let died_at = Instant::now();
    // `dying` stops keeping its claim alive; the survivor polls as a worker loop would.
    let reclaimed = loop {
        let mut got = survivor.claim(1, Duration::from_millis(50)).unwrap();
        if let Some(delivery) = got.pop() {
            break delivery;
        }
        assert!(died_at.elapsed() < VISIBILITY * 10, "never reclaimed");
    };
    let delay = died_at.elapsed();
    eprintln!(
        "redelivery delay after the worker stopped: {delay:?} (visibility timeout {VISIBILITY:?})"
    );
    assert!(delay >= VISIBILITY, "reclaimed after {delay:?}");
    assert_eq!((reclaimed.job_id, reclaimed.deliveries), (1, 2));
    assert_eq!(reclaimed.receipt, lost.receipt);

    // The old claim is gone: the dead worker, if it comes back, learns so and must stop.
    assert!(!dying.keep_alive(&lost).unwrap());
    assert!(survivor.keep_alive(&reclaimed).unwrap());
    survivor.ack(&reclaimed).unwrap();
    assert_eq!(survivor.backlog().unwrap(), 0);
}

#[test]
fn a_job_whose_workers_keep_dying_is_exhausted_after_its_deliveries() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = RedisJobQueue::open(
        &redis(&server),
        QueueConfig {
            visibility_timeout: Duration::from_millis(100),
            max_deliveries: 2,
            ..QueueConfig::new(["default"])
        },
    )
    .unwrap();
    queue.enqueue("default", 9).unwrap();
    let started = Instant::now();
    let mut seen: Vec<Delivery> = Vec::new();
    // Each claim "dies": never kept alive, never acknowledged.
    while !seen.last().is_some_and(Delivery::is_exhausted) {
        seen.extend(queue.claim(1, Duration::from_millis(50)).unwrap());
        assert!(started.elapsed() < Duration::from_secs(5), "{seen:?}");
    }
    let counts: Vec<u64> = seen.iter().map(|d| d.deliveries).collect();
    assert_eq!(counts, [1, 2, 3]);
    let exhausted = seen.pop().unwrap();
    assert!(
        exhausted.exhausted_reason().contains("started 2 times"),
        "{}",
        exhausted.exhausted_reason()
    );

    // The caller stores the failed record, then acknowledges: the entry is gone for good.
    queue.ack(&exhausted).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(queue
        .claim(1, Duration::from_millis(50))
        .unwrap()
        .is_empty());
    assert_eq!(queue.backlog().unwrap(), 0);
}

#[test]
fn admission_holds_the_shared_cap_under_concurrent_submits_on_two_nodes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cap = 10u64;
    let nodes: Vec<Arc<RedisJobQueue>> = ["api-1", "api-2"]
        .iter()
        .map(|name| Arc::new(node(&server, name, &[])))
        .collect();
    // 5N concurrent submits across both nodes and two model sets.
    let threads: Vec<_> = (0..5 * cap)
        .map(|job| {
            let node = nodes[job as usize % 2].clone();
            std::thread::spawn(move || {
                let set = if job % 3 == 0 { "other" } else { "default" };
                node.enqueue(set, job).unwrap()
            })
        })
        .collect();
    let answers: Vec<Admission> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = answers
        .iter()
        .filter(|a| matches!(a, Admission::Accepted { .. }))
        .count() as u64;
    let refused = answers
        .iter()
        .filter(|a| **a == Admission::Full { backlog: cap, cap })
        .count() as u64;
    eprintln!(
        "{} submits at a cap of {cap}: {accepted} accepted, {refused} refused",
        5 * cap
    );
    assert_eq!((accepted, refused), (cap, 4 * cap));
    assert_eq!(nodes[1].backlog().unwrap(), cap);

    // One job finishing makes room for exactly one more.
    let worker = node(&server, "w", &["default", "other"]);
    let done = worker
        .claim(1, Duration::from_millis(100))
        .unwrap()
        .remove(0);
    worker.ack(&done).unwrap();
    assert_eq!(
        nodes[0].enqueue("default", 100).unwrap(),
        Admission::Accepted { backlog: cap }
    );
    assert!(matches!(
        nodes[1].enqueue("default", 101).unwrap(),
        Admission::Full { .. }
    ));
}

#[test]
fn each_model_set_has_its_own_stream() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let api = node(&server, "api", &[]);
    let realistic = node(&server, "gpu-1", &["realistic"]);
    let anime = node(&server, "gpu-2", &["anime"]);
    api.enqueue("realistic", 1).unwrap();
    api.enqueue("anime", 2).unwrap();
    let got = anime.claim(10, Duration::from_millis(100)).unwrap();
    assert_eq!(got.iter().map(|d| d.job_id).collect::<Vec<_>>(), [2]);
    assert_eq!(got[0].model_set, "anime");
    let got = realistic.claim(10, Duration::from_millis(100)).unwrap();
    assert_eq!(got.iter().map(|d| d.job_id).collect::<Vec<_>>(), [1]);
    assert_eq!(
        api.backlog().unwrap(),
        2,
        "the backlog counts every model set"
    );
    assert!(api
        .claim(10, Duration::from_millis(100))
        .unwrap()
        .is_empty());
}

#[test]
fn claims_wait_for_a_new_entry_and_batch_what_is_there() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let worker = Arc::new(node(&server, "w", &["default"]));
    let waiting = {
        let worker = worker.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let got = worker.claim(4, Duration::from_secs(5)).unwrap();
            (got, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let api = node(&server, "api", &[]);
    api.enqueue("default", 5).unwrap();
    let (got, took) = waiting.join().unwrap();
    assert_eq!(got.len(), 1);
    assert!(took < Duration::from_secs(4), "the claim waited {took:?}");

    // Several waiting entries come in one claim, up to its size.
    for job in 10..13 {
        api.enqueue("default", job).unwrap();
    }
    let got = worker.claim(2, Duration::ZERO).unwrap();
    assert_eq!(got.iter().map(|d| d.job_id).collect::<Vec<_>>(), [10, 11]);
    let got = worker.claim(2, Duration::ZERO).unwrap();
    assert_eq!(got.iter().map(|d| d.job_id).collect::<Vec<_>>(), [12]);
}

#[test]
fn a_stopped_server_is_a_quick_error_and_the_queue_recovers_when_it_returns() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let worker = node(&server, "w", &["default"]);
    worker.enqueue("default", 1).unwrap();

    server.stop();
    let started = Instant::now();
    let err = worker.enqueue("default", 2).unwrap_err();
    assert!(matches!(err, StoreError::Remote { .. }), "{err:?}");
    let err = worker.claim(1, Duration::from_secs(1)).unwrap_err();
    assert!(
        err.to_string().contains("Redis at redis://127.0.0.1:"),
        "{err}"
    );
    let took = started.elapsed();
    eprintln!("two queue calls to a stopped redis-server failed within {took:?}: {err}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Back without its data: the group is made again and new jobs flow.
    server.restart();
    assert!(worker
        .claim(1, Duration::from_millis(100))
        .unwrap()
        .is_empty());
    worker.enqueue("default", 3).unwrap();
    let got = worker.claim(1, Duration::from_millis(100)).unwrap();
    assert_eq!(got.iter().map(|d| d.job_id).collect::<Vec<_>>(), [3]);
}

#[test]
fn a_persistent_server_keeps_pending_claims_across_a_kill() {
    let Some(mut server) = RedisServer::start_persistent() else {
        return;
    };
    let dying = node(&server, "dying", &["default"]);
    dying.enqueue("default", 8).unwrap();
    let lost = dying
        .claim(1, Duration::from_millis(100))
        .unwrap()
        .remove(0);
    server.restart();
    let survivor = node(&server, "survivor", &["default"]);
    std::thread::sleep(VISIBILITY);
    let got = survivor.claim(1, Duration::from_millis(100)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].job_id, got[0].deliveries), (8, 2));
    assert_eq!(got[0].receipt, lost.receipt);
    assert_eq!(survivor.backlog().unwrap(), 1);
}

#[test]
fn a_progress_report_reaches_another_node_aged_and_lapses_by_itself() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let worker = node(&server, "w", &["default"]);
    let api = node(&server, "api", &[]);
    assert_eq!(
        api.reported_progress(7).unwrap(),
        None,
        "nothing reported yet"
    );

    let eta = Duration::from_secs(30);
    worker
        .report_progress(7, Progress::Waiting { position: 1, eta })
        .unwrap();
    worker
        .report_progress(
            7,
            Progress::Running {
                step: 3,
                total: 21,
                eta,
            },
        )
        .unwrap();
    let Some(Progress::Running {
        step,
        total,
        eta: left,
    }) = api.reported_progress(7).unwrap()
    else {
        panic!("the latest report is the running one");
    };
    assert_eq!((step, total), (3, 21));
    // Counted down by the report's age, which its time to live bounds.
    assert!(left <= eta && left >= eta - PROGRESS_LAPSE, "{left:?}");
    assert_eq!(api.reported_progress(8).unwrap(), None, "another job");

    // The key lapses by itself within PROGRESS_LAPSE of the last report.
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg("{headshot}:progress:7")
        .query(&mut raw)
        .unwrap();
    assert!(
        ttl_ms > 0 && ttl_ms <= PROGRESS_LAPSE.as_millis() as i64,
        "{ttl_ms}"
    );
    // Something unreadable there (another version's report) is no progress, not an error.
    redis::cmd("SET")
        .arg("{headshot}:progress:7")
        .arg("not json")
        .query::<()>(&mut raw)
        .unwrap();
    assert_eq!(api.reported_progress(7).unwrap(), None);
    redis::cmd("DEL")
        .arg("{headshot}:progress:7")
        .query::<()>(&mut raw)
        .unwrap();
    assert_eq!(api.reported_progress(7).unwrap(), None, "lapsed");
}

/// The consumers of the group on `default`'s stream, by name.
fn consumer_names(server: &RedisServer) -> Vec<String> {
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("{headshot}:stream:default")
        .arg("workers")
        .query(&mut raw)
        .unwrap();
    let mut names: Vec<String> = reply.consumers.into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

#[test]
fn consumers_gone_with_nothing_pending_are_forgotten_and_those_holding_entries_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let forgetful = |consumer: &str| {
        RedisJobQueue::open(
            &redis(&server),
            QueueConfig {
                consumer: consumer.into(),
                forget_consumers_after: Duration::from_millis(300),
                ..QueueConfig::new(["default"])
            },
        )
        .unwrap()
    };
    let (done, holding, live) = (forgetful("done"), forgetful("holding"), forgetful("live"));
    done.enqueue("default", 1).unwrap();
    let finished = done.claim(1, Duration::from_millis(100)).unwrap();
    done.ack(&finished[0]).unwrap();
    holding.enqueue("default", 2).unwrap();
    let held = holding.claim(1, Duration::from_millis(100)).unwrap();
    assert_eq!(held[0].job_id, 2);
    assert_eq!(consumer_names(&server), ["done", "holding"]);

    // Both idle past the limit: the next claim anywhere forgets the one with nothing pending.
    std::thread::sleep(Duration::from_millis(500));
    assert!(live
        .claim(1, Duration::from_millis(100))
        .unwrap()
        .is_empty());
    // (`live` itself appears once a read hands it an entry: Redis 7.0 makes no consumer for an
    // empty blocking read.)
    let names = consumer_names(&server);
    assert!(
        !names.contains(&"done".to_string()) && names.contains(&"holding".to_string()),
        "{names:?}"
    );
    assert!(holding.keep_alive(&held[0]).unwrap(), "its claim is intact");

    // A forgotten consumer that was alive after all is made again by its next read.
    done.enqueue("default", 3).unwrap();
    let again = done.claim(1, Duration::from_millis(100)).unwrap();
    assert_eq!(again.iter().map(|d| d.job_id).collect::<Vec<_>>(), [3]);
    assert!(consumer_names(&server).contains(&"done".to_string()));
}
