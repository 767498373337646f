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

#[test]
fn tiny_manifest_resolves_to_committed_fixtures_without_network() {
    let manifest = Manifest::from_file(models_dir().join("tiny.toml")).unwrap();
    let options = ResolveOptions {
        cache_dir: std::env::temp_dir().join("headshot-weights-no-cache"),
        allow_download: false,
        progress: false,
        // The face models are fetched test assets, not committed fixtures.
        only: Some(
            ComponentKind::ALL
                .into_iter()
                .filter(|k| {
                    !matches!(
                        k,
                        ComponentKind::FaceDetector | ComponentKind::FaceRecognizer
                    )
                })
                .collect(),
        ),
    };
    let set = headshot_weights::resolve(&manifest, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.components.len(), 9);
    for component in set.components.values() {
        for file in &component.files {
            assert_eq!(file.origin, FileOrigin::Local);
            assert!(file.path.is_file(), "{}", file.path.display());
        }
    }
    let vae = set.get(ComponentKind::Vae).unwrap();
    assert!(vae
        .file("config.json")
        .unwrap()
        .to_string_lossy()
        .contains("vae-ft-mse"));
}
