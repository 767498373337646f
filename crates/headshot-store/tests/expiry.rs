use std::time::{Duration, SystemTime};

use headshot_store::{
    sweep_expired, JobRecord, JobStore, LocalDiskOutputStore, MemoryJobStore, OutputFormat,
    OutputName, OutputStore,
};

#[test]
fn sweep_removes_old_records_with_their_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = LocalDiskOutputStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
    let jobs = MemoryJobStore::new();

    let mut old = JobRecord::queued(
        jobs.next_id().unwrap(),
        serde_json::json!({}),
        outputs.new_prefix(),
        OutputFormat::Png,
        1,
    );
    let old_name = OutputName::new(&old.file_prefix, 0, OutputFormat::Png).unwrap();
    outputs.put(&old_name, b"png").unwrap();
    old.mark_success(vec![old_name.to_string()], false, Duration::from_secs(1));
    old.finished_at_ms = old.finished_at_ms.map(|t| t - 120_000);
    jobs.insert(&old).unwrap();

    let mut fresh = JobRecord::queued(
        jobs.next_id().unwrap(),
        serde_json::json!({}),
        outputs.new_prefix(),
        OutputFormat::Base64,
        1,
    );
    let fresh_name = OutputName::new(&fresh.file_prefix, 0, OutputFormat::Base64).unwrap();
    outputs.put(&fresh_name, b"data:").unwrap();
    fresh.mark_success(vec![fresh_name.to_string()], false, Duration::from_secs(1));
    jobs.insert(&fresh).unwrap();

    let summary =
        sweep_expired(&jobs, &outputs, Duration::from_secs(60), SystemTime::now()).unwrap();
    assert_eq!(summary.records_removed, 1);
    assert_eq!(summary.files_removed, 1);
    assert_eq!(jobs.get(old.id).unwrap(), None);
    assert_eq!(outputs.read(&old_name).unwrap(), None);
    assert!(jobs.get(fresh.id).unwrap().is_some());
    assert_eq!(outputs.read(&fresh_name).unwrap().unwrap(), b"data:");
}
