//! Model and runtime loading failures name the file and say how to fix it.
//! One test function: ONNX Runtime's environment is process-wide, so the order matters.

mod common;

use headshot_face::{FaceAnalyzer, FaceAnalyzerOptions, FaceError, FaceModelPaths};

#[test]
fn load_failures_are_explained() {
    let good = common::model_paths();

    // 1. A library path that does not exist: RuntimeLoad with the ORT_DYLIB_PATH hint.
    let options = FaceAnalyzerOptions {
        onnxruntime_library: Some("/nonexistent/libonnxruntime.so".into()),
        ..FaceAnalyzerOptions::default()
    };
    match FaceAnalyzer::load(&good, &options) {
        Err(err @ FaceError::RuntimeLoad { .. }) => {
            let message = err.to_string();
            assert!(
                message.contains("/nonexistent/libonnxruntime.so"),
                "{message}"
            );
            assert!(message.contains("ORT_DYLIB_PATH"), "{message}");
        }
        other => panic!("expected RuntimeLoad, got {:?}", other.err()),
    }

    let options = common::options();
    // 2. A missing model file is named.
    let missing = FaceModelPaths {
        detector: "/nonexistent/det_10g.onnx".into(),
        ..good.clone()
    };
    match FaceAnalyzer::load(&missing, &options) {
        Err(err @ FaceError::ModelLoad { .. }) => assert!(
            err.to_string().contains("/nonexistent/det_10g.onnx"),
            "{err}"
        ),
        other => panic!("expected ModelLoad, got {:?}", other.err()),
    }

    // 3. A file that is not an ONNX model.
    let not_onnx = FaceModelPaths {
        recognizer: common::assets_dir().join("players.jpg"),
        ..good.clone()
    };
    match FaceAnalyzer::load(&not_onnx, &options) {
        Err(err @ FaceError::ModelLoad { .. }) => {
            assert!(err.to_string().contains("players.jpg"), "{err}")
        }
        other => panic!("expected ModelLoad, got {:?}", other.err()),
    }

    // 4. The models swapped: the recogniser is not an SCRFD detector.
    let swapped = FaceModelPaths {
        detector: good.recognizer.clone(),
        recognizer: good.detector.clone(),
    };
    match FaceAnalyzer::load(&swapped, &options) {
        Err(FaceError::ModelLayout { path, reason }) => {
            assert_eq!(path, good.recognizer);
            assert!(reason.contains("SCRFD"), "{reason}");
        }
        other => panic!("expected ModelLayout, got {:?}", other.err()),
    }

    // 5. And the right pair loads.
    FaceAnalyzer::load(&good, &options).expect("buffalo_s loads");
}
