//! /metrics after one job: duration histograms have real buckets (not summaries), and the job
//! moves every counter by exactly one (nothing counted twice, by server and worker or per
//! alias). Its own test binary: the Prometheus recorder is process-wide.

mod common;

use std::collections::BTreeMap;

use common::*;

/// `name{labels}` -> value of every sample line.
async fn scrape(server: &TestServer) -> BTreeMap<String, f64> {
    let text = metrics_text(&server.url("/metrics")).await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

const HISTOGRAMS: [&str; 5] = [
    "headshot_job_duration_seconds",
    "headshot_queue_wait_seconds",
    "headshot_prepare_duration_seconds",
    "headshot_batch_duration_seconds",
    "headshot_batch_size",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_counts_once_in_bucketed_histograms() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let before = scrape(&server).await;

    let v = server.submit(&body(&internet)).await;
    assert_eq!(v["status"], "success", "{v}");
    // Through an alias path: still one fetch.
    let (_, fetched) = server
        .post(
            &format!("/api/v3/fetch/{}", v["id"]),
            &serde_json::json!({"key": KEY}),
        )
        .await;
    assert_eq!(fetched["status"], "success");
    let after = scrape(&server).await;

    for name in HISTOGRAMS {
        let buckets: Vec<&String> = after
            .keys()
            .filter(|k| k.starts_with(&format!("{name}_bucket{{le=")))
            .collect();
        assert!(buckets.len() > 3, "{name} has no buckets: {after:?}");
        assert!(
            after.contains_key(&format!("{name}_bucket{{le=\"+Inf\"}}")),
            "{name}"
        );
        assert!(
            !after
                .keys()
                .any(|k| k.starts_with(name) && k.contains("quantile")),
            "{name} rendered as a summary"
        );
        let count = |m: &BTreeMap<String, f64>| m.get(&format!("{name}_count")).copied();
        assert_eq!(
            count(&after).unwrap() - count(&before).unwrap_or(0.0),
            1.0,
            "{name}: one sample for one job"
        );
    }

    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    for counter in [
        "headshot_submit_requests_total",
        "headshot_fetch_requests_total",
        "headshot_jobs_finished_total{outcome=\"success\"}",
    ] {
        assert_eq!(delta(counter), 1.0, "{counter}: {after:?}");
    }
    // Every counter that moved moved by exactly one.
    for (name, value) in &after {
        if name.contains("_total") {
            let moved = value - before.get(name).copied().unwrap_or(0.0);
            assert!(moved == 0.0 || moved == 1.0, "{name} moved by {moved}");
        }
    }
    // The names removed as duplicates stay gone.
    for gone in [
        "headshot_jobs_total",
        "headshot_generation_seconds",
        "headshot_job_failures_total",
    ] {
        assert!(!after.keys().any(|k| k.starts_with(gone)), "{gone} is back");
    }
}
