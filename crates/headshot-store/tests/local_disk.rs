use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use headshot_store::{
    encode_output, png_data_uri, LocalDiskOutputStore, OutputFormat, OutputName, OutputStore,
    DEFAULT_OUTPUT_TTL,
};

fn store(ttl: Duration) -> (tempfile::TempDir, LocalDiskOutputStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDiskOutputStore::open(dir.path().join("out"), ttl).unwrap();
    (dir, store)
}

#[test]
fn png_and_base64_round_trip() {
    let (_dir, store) = store(DEFAULT_OUTPUT_TTL);
    let prefix = store.new_prefix();
    let png = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3, 255];

    let png_name = OutputName::new(&prefix, 0, OutputFormat::Png).unwrap();
    store
        .put(&png_name, &encode_output(OutputFormat::Png, &png))
        .unwrap();
    let b64_name = OutputName::new(&prefix, 1, OutputFormat::Base64).unwrap();
    store
        .put(&b64_name, &encode_output(OutputFormat::Base64, &png))
        .unwrap();

    assert_eq!(store.read(&png_name).unwrap().unwrap(), png);
    let text = String::from_utf8(store.read(&b64_name).unwrap().unwrap()).unwrap();
    assert_eq!(text, "data:image/png;base64,iVBORwABAgP/");
    assert_eq!(text, png_data_uri(&png));

    // The file on disk is named exactly as served, and nothing else is left behind.
    let mut files: Vec<String> = std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [format!("{prefix}-0.png"), format!("{prefix}-1.base64")]
    );

    // Overwriting replaces the contents atomically.
    store.put(&png_name, b"second").unwrap();
    assert_eq!(store.read(&png_name).unwrap().unwrap(), b"second");
}

#[test]
fn missing_file_reads_as_none() {
    let (_dir, store) = store(DEFAULT_OUTPUT_TTL);
    let name = OutputName::new(&store.new_prefix(), 0, OutputFormat::Png).unwrap();
    assert_eq!(store.read(&name).unwrap(), None);
}

#[test]
fn prefixes_are_unguessable() {
    let (_dir, store) = store(DEFAULT_OUTPUT_TTL);
    let mut seen = HashSet::new();
    for _ in 0..2000 {
        let prefix = store.new_prefix();
        // A hyphenated UUID v4: 32 hex digits = 128 bits, of which 122 random.
        assert_eq!(prefix.len(), 36, "{prefix}");
        let hex: String = prefix.chars().filter(|c| *c != '-').collect();
        assert_eq!(hex.len(), 32);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{prefix}");
        assert_eq!(&prefix[14..15], "4", "version nibble of {prefix}");
        assert!(OutputName::new(&prefix, 0, OutputFormat::Png).is_ok());
        assert!(seen.insert(prefix), "prefix repeated");
    }
}

#[test]
fn traversal_names_never_reach_the_file_system() {
    let (dir, store) = store(DEFAULT_OUTPUT_TTL);
    // A file outside the output directory that a traversal would try to read.
    std::fs::write(dir.path().join("secret-0.png"), b"secret").unwrap();
    for bad in [
        "../secret-0.png",
        "..%2Fsecret-0.png",
        "/etc/passwd",
        "sub/dir-0.png",
        "..\\secret-0.png",
        "secret-0.png\0",
        ".tmp-0.png",
        "",
    ] {
        assert!(bad.parse::<OutputName>().is_err(), "{bad:?} parsed");
    }
    // A valid name only ever resolves inside the store directory.
    let name: OutputName = "secret-0.png".parse().unwrap();
    assert!(store.path_of(&name).starts_with(store.dir()));
    assert_eq!(store.read(&name).unwrap(), None);
}

#[test]
fn delete_prefix_removes_only_that_job() {
    let (_dir, store) = store(DEFAULT_OUTPUT_TTL);
    let a = store.new_prefix();
    let b = store.new_prefix();
    for i in 0..2 {
        store
            .put(&OutputName::new(&a, i, OutputFormat::Png).unwrap(), b"a")
            .unwrap();
    }
    let b0 = OutputName::new(&b, 0, OutputFormat::Base64).unwrap();
    store.put(&b0, b"b").unwrap();
    assert_eq!(store.delete_prefix(&a).unwrap(), 2);
    assert_eq!(
        store
            .read(&OutputName::new(&a, 0, OutputFormat::Png).unwrap())
            .unwrap(),
        None
    );
    assert_eq!(store.read(&b0).unwrap().unwrap(), b"b");
}

#[test]
fn sweep_removes_files_past_the_ttl_only() {
    let ttl = Duration::from_secs(60);
    let (_dir, store) = store(ttl);
    let name = OutputName::new(&store.new_prefix(), 0, OutputFormat::Png).unwrap();
    store.put(&name, b"img").unwrap();
    // A stranger's file in the directory is left alone.
    std::fs::write(store.dir().join("README"), b"keep").unwrap();

    let report = store.sweep_expired(SystemTime::now()).unwrap();
    assert_eq!(report.files_removed, 0);
    assert_eq!(store.read(&name).unwrap().unwrap(), b"img");

    let later = SystemTime::now() + ttl + Duration::from_secs(1);
    let report = store.sweep_expired(later).unwrap();
    assert_eq!(report.files_removed, 1);
    assert_eq!(report.bytes_removed, 3);
    assert_eq!(store.read(&name).unwrap(), None);
    assert!(store.dir().join("README").exists());
}

#[test]
fn expired_files_are_not_served_even_before_a_sweep() {
    let (_dir, store) = store(Duration::ZERO);
    let name = OutputName::new(&store.new_prefix(), 0, OutputFormat::Png).unwrap();
    store.put(&name, b"img").unwrap();
    assert_eq!(store.read(&name).unwrap(), None);
    assert!(!store.path_of(&name).exists());
}

#[test]
fn sweep_clears_stale_temp_files() {
    let ttl = Duration::from_secs(60);
    let (_dir, store) = store(ttl);
    std::fs::write(store.dir().join(".tmp-deadbeef"), b"partial").unwrap();
    let later = SystemTime::now() + ttl + Duration::from_secs(1);
    assert_eq!(store.sweep_expired(later).unwrap().files_removed, 1);
}

#[test]
fn readers_never_see_a_partial_write() {
    let (_dir, store) = store(DEFAULT_OUTPUT_TTL);
    let store = std::sync::Arc::new(store);
    let name = OutputName::new(&store.new_prefix(), 0, OutputFormat::Png).unwrap();
    let a = vec![b'a'; 256 * 1024];
    let b = vec![b'b'; 256 * 1024];
    store.put(&name, &a).unwrap();
    let writer = {
        let (store, name, a, b) = (store.clone(), name.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            for i in 0..50 {
                store.put(&name, if i % 2 == 0 { &b } else { &a }).unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let got = store
            .read(&name)
            .unwrap()
            .expect("file vanished during a rewrite");
        assert!(
            got == a || got == b,
            "read a torn file of {} bytes",
            got.len()
        );
        reads += 1;
    }
    writer.join().unwrap();
    // No temp files are left behind.
    assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 1);
}
