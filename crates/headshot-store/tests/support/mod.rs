//! Records and inputs the job store tests build (each test file includes this module).
#![allow(dead_code)] // each test file uses some of the builders

use headshot_core::{CensorType, GenerationJob, JobSettings};
use headshot_store::{JobRecord, JobStore, OutputFormat};
use serde_json::json;

/// A fresh queued record with a webhook and a track id, under the store's next id.
pub fn record(store: &dyn JobStore) -> JobRecord {
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

/// A plain queued record under the store's next id.
pub fn queued(store: &dyn JobStore) -> JobRecord {
    let id = store.next_id().unwrap();
    JobRecord::queued(
        id,
        json!({"seed": id}),
        format!("p{id}"),
        OutputFormat::Png,
        1,
    )
}

pub fn input(seed: u64) -> GenerationJob {
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
