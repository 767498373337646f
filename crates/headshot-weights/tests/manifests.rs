//! The committed manifests in `models/` parse, and the tiny set resolves to the committed fixtures.

use std::path::PathBuf;

use headshot_weights::{ComponentKind, FileOrigin, Manifest, ResolveOptions};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn every_committed_manifest_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(models_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let manifest = Manifest::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        for kind in ComponentKind::ALL {
            if kind.is_required() {
                assert!(
                    manifest.component(kind).is_some(),
                    "{}: {kind}",
                    path.display()
                );
            }
        }
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected tiny, sd15-faceid-plusv2 and buffalo_s manifests, saw {seen}"
    );
}

#[test]
fn real_manifest_names_the_reference_repos() {
    let manifest = Manifest::from_file(models_dir().join("sd15-faceid-plusv2.toml")).unwrap();
    let repo = |kind| manifest.component(kind).unwrap().repo.clone().unwrap();
    assert_eq!(repo(ComponentKind::Vae), "stabilityai/sd-vae-ft-mse");
    assert_eq!(repo(ComponentKind::IpAdapter), "h94/IP-Adapter-FaceID");
    let ip = manifest.component(ComponentKind::IpAdapter).unwrap();
    assert_eq!(
        ip.repo_path(&ip.files[0]),
        "ip-adapter-faceid-plusv2_sd15.bin"
    );
    let enc = manifest.component(ComponentKind::ImageEncoder).unwrap();
    assert_eq!(
        enc.repo_path("model.safetensors"),
        "models/image_encoder/model.safetensors"
    );
    let det = manifest.component(ComponentKind::FaceDetector).unwrap();
    assert_eq!(det.repo_path(&det.files[0]), "buffalo_l/det_10g.onnx");
}

fn local_options() -> ResolveOptions {
    ResolveOptions {
        cache_dir: std::env::temp_dir().join("headshot-weights-no-cache"),
        allow_download: false,
        progress: false,
        // The face models are fetched test assets, not committed fixtures.
        only: Some(ComponentKind::except_face_models()),
    }
}

#[test]
fn tiny_manifests_resolve_to_committed_fixtures_without_network() {
    // tiny.toml: the set written by diffusers 0.35 / transformers 4.57; tiny-current.toml: the
    // same set written by diffusers 0.42 / transformers 5.24.
    for (file, vae_folder) in [
        ("tiny.toml", "vae-ft-mse"),
        ("tiny-current.toml", "tiny-current"),
    ] {
        let manifest = Manifest::from_file(models_dir().join(file)).unwrap();
        let set = headshot_weights::resolve(&manifest, &local_options())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(set.components.len(), 9, "{file}");
        for component in set.components.values() {
            assert!(component
                .files
                .iter()
                .all(|f| f.origin == FileOrigin::Local));
            for file in &component.files {
                assert!(file.path.is_file(), "{}", file.path.display());
            }
        }
        let vae = set.get(ComponentKind::Vae).unwrap();
        assert!(
            vae.file("config.json")
                .unwrap()
                .to_string_lossy()
                .contains(vae_folder),
            "{file}"
        );
    }
}

#[test]
fn hub_manifests_name_the_files_their_repos_hold() {
    for file in ["sd15-faceid-plusv2.toml", "buffalo_s.toml"] {
        let manifest = Manifest::from_file(models_dir().join(file)).unwrap();
        // CompVis/stable-diffusion-safety-checker's main branch has pytorch_model.bin only.
        let safety = manifest.component(ComponentKind::SafetyChecker).unwrap();
        assert_eq!(
            safety.repo.as_deref(),
            Some("CompVis/stable-diffusion-safety-checker")
        );
        assert_eq!(safety.files, ["config.json", "pytorch_model.bin"], "{file}");
        // The non-commercial weights say so.
        for kind in [
            ComponentKind::IpAdapter,
            ComponentKind::FaceDetector,
            ComponentKind::FaceRecognizer,
        ] {
            let licence = manifest.component(kind).unwrap().licence.as_deref();
            assert!(
                licence.is_some_and(|l| l.contains("non-commercial")),
                "{file}: {kind}: {licence:?}"
            );
        }
        assert!(manifest
            .component(ComponentKind::Unet)
            .unwrap()
            .licence
            .is_none());
    }
    // buffalo_s: the pack's own detector (not scrfd_500m_bnkps.onnx, which the tests use).
    let manifest = Manifest::from_file(models_dir().join("buffalo_s.toml")).unwrap();
    let det = manifest.component(ComponentKind::FaceDetector).unwrap();
    assert_eq!(det.repo_path(&det.files[0]), "buffalo_s/det_500m.onnx");
}

/// Everything logged while `f` runs, as text.
fn logs_of(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn licence_notices_are_logged_when_a_set_resolves() {
    let text = std::fs::read_to_string(models_dir().join("tiny.toml"))
        .unwrap()
        .replace(
            "[sources.sd15]\n",
            "[sources.sd15]\nlicence = \"source notice\"\n",
        )
        .replace(
            "[components.ip_adapter]\n",
            "[components.ip_adapter]\nlicence = \"non-commercial research use only\"\n",
        );
    let manifest =
        Manifest::parse(&text, std::path::Path::new("licensed.toml"), &models_dir()).unwrap();
    // A component's own notice wins over its source's; others inherit the source's.
    assert_eq!(
        manifest
            .component(ComponentKind::Unet)
            .unwrap()
            .licence
            .as_deref(),
        Some("source notice")
    );
    let logs = logs_of(|| {
        headshot_weights::resolve(&manifest, &local_options()).unwrap();
    });
    let line = logs
        .lines()
        .find(|l| l.contains("component=ip_adapter"))
        .unwrap_or_else(|| panic!("no ip_adapter notice in:\n{logs}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("licence: non-commercial research use only"),
        "{line}"
    );

    // The tiny set carries no notice: nothing is logged at warn level.
    let manifest = Manifest::from_file(models_dir().join("tiny.toml")).unwrap();
    let logs = logs_of(|| {
        headshot_weights::resolve(&manifest, &local_options()).unwrap();
    });
    assert!(!logs.contains("WARN"), "{logs}");
}
