//! `face_similarity`: every success answer (submit, fetch, webhook) reports, per image, the
//! likeness of its face to the input face, from the finish stage's scorer (here the scripted
//! analyzer, which reads the score out of the scripted image: its seed's low byte / 255).

mod common;

use common::*;
use serde_json::{json, Value};

/// The scripted score as the wire writes it (six decimals).
fn score_of_seed(seed: u64) -> Option<f64> {
    let image = headshot_core::RgbImage {
        width: 1,
        height: 1,
        pixels: vec![seed as u8, (seed >> 8) as u8, (seed >> 16) as u8],
    };
    headshot_test_support::scripted_likeness(&image).map(|s| (f64::from(s) * 1e6).round() / 1e6)
}

fn scores(v: &Value) -> Vec<Option<f64>> {
    v["face_similarity"]
        .as_array()
        .unwrap_or_else(|| panic!("no face_similarity in {v}"))
        .iter()
        .map(Value::as_f64)
        .collect()
}

#[tokio::test]
async fn success_fetch_and_webhook_report_one_score_per_image() {
    let mut internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let request = with(
        with(body(&internet), "samples", json!(2)),
        "webhook",
        json!(internet.url("/webhook")),
    );
    let v = server.submit(&with(request, "seed", json!(200))).await;
    assert_eq!(v["status"], "success", "{v}");
    let expected = score_of_seed(200).unwrap();
    assert_eq!(scores(&v), vec![Some(expected), Some(expected)]);
    assert_eq!(expected, 0.784314);
    assert_eq!(v["output"].as_array().unwrap().len(), 2);
    assert_eq!(
        keys(&v["meta"]),
        sorted(&META_KEYS),
        "meta keeps its documented keys"
    );

    let fetched = server.fetch(v["id"].as_u64().unwrap()).await;
    assert_eq!(fetched["status"], "success");
    assert_eq!(fetched["face_similarity"], v["face_similarity"]);

    let hook = internet.next_webhook().await;
    assert_eq!(hook["face_similarity"], v["face_similarity"]);
}

#[tokio::test]
async fn an_image_without_a_face_scores_null() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    // Seed 2^24 encodes a black image: the scripted analyzer finds no face in it.
    let v = server
        .submit(&with(body(&internet), "seed", json!(1u64 << 24)))
        .await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["face_similarity"], json!([null]));
}

#[tokio::test]
async fn scores_survive_a_restart() {
    let internet = Internet::start(0).await;
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        tmp.path().to_path_buf(),
        ScriptedGenerator::default(),
        |_| {},
    )
    .await;
    let v = server
        .submit(&with(body(&internet), "seed", json!(77)))
        .await;
    let id = v["id"].as_u64().unwrap();
    server.stop().await;
    let server = TestServer::start_in(
        tmp.path().to_path_buf(),
        ScriptedGenerator::default(),
        |_| {},
    )
    .await;
    let fetched = server.fetch(id).await;
    assert_eq!(fetched["face_similarity"], v["face_similarity"]);
    assert_eq!(scores(&fetched), vec![score_of_seed(77)]);
}

#[tokio::test]
async fn answers_say_how_many_faces_the_photo_shows_and_face_index_chooses_among_them() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let v = server.submit(&body(&internet)).await;
    assert_eq!(v["faces_found"], 1, "{v}");
    let fetched = server.fetch(v["id"].as_u64().unwrap()).await;
    assert_eq!(fetched["faces_found"], 1);
    assert_eq!(
        server
            .submit(&with(body(&internet), "face_index", json!(0)))
            .await["status"],
        "success"
    );

    // The scripted photo shows one face: index 1 is out of range once it has been analysed.
    let v = server
        .submit(&with(body(&internet), "face_index", json!(1)))
        .await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(
        v["message"],
        "face_index 1 is out of range: the photo shows 1 face (0 is the largest)"
    );
    assert!(v["id"].is_u64());

    // A negative index is refused before any work, in the validation shape.
    let (status, v) = server
        .post(
            "/api/v6/image_editing/head_shot",
            &with(body(&internet), "face_index", json!(-1)),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "error");
    assert!(v["message"]["face_index"].is_array(), "{v}");
}

/// Best-of-N: 4 candidates rendered from seeds 100..=103, the 2 most alike returned, most alike
/// first (the scripted score grows with the seed), each with its seed; every score matches a
/// recomputation on the stored PNG.
#[tokio::test]
async fn best_of_n_returns_the_most_alike_sorted_with_their_seeds() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let request = with(
        with(
            with(body(&internet), "samples", json!(2)),
            "candidates",
            json!(4),
        ),
        "seed",
        json!(100),
    );
    let v = server.submit(&request).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["seeds"], json!([103, 102]));
    assert_eq!(scores(&v), vec![score_of_seed(103), score_of_seed(102)]);
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    for (url, score) in output.iter().zip(scores(&v)) {
        let (status, png) = download(url.as_str().unwrap()).await;
        assert_eq!(status, 200);
        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        let stored = headshot_core::RgbImage {
            width: image.width(),
            height: image.height(),
            pixels: image.into_raw(),
        };
        let recomputed = headshot_test_support::scripted_likeness(&stored)
            .map(|s| (f64::from(s) * 1e6).round() / 1e6);
        assert_eq!(recomputed, score, "{url}");
    }
    // The generator rendered all four candidates in one job, from their own seeds.
    let rendered = server.generator.rendered();
    assert_eq!(rendered.last().unwrap().candidates, 4);
    assert_eq!(
        rendered.last().unwrap().image_seeds(),
        Some(vec![100, 101, 102, 103])
    );

    let fetched = server.fetch(v["id"].as_u64().unwrap()).await;
    assert_eq!(fetched["seeds"], v["seeds"]);
    assert_eq!(fetched["face_similarity"], v["face_similarity"]);
    // Without candidates no seeds are listed (samples share the job's one noise stream).
    let plain = server
        .submit(&with(body(&internet), "samples", json!(2)))
        .await;
    assert!(plain.get("seeds").is_none(), "{plain}");
}

#[tokio::test]
async fn candidates_are_checked() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for bad in [json!(1), json!(0), json!(17), json!("many")] {
        let request = with(
            with(body(&internet), "samples", json!(2)),
            "candidates",
            bad.clone(),
        );
        let (_, v) = server
            .post("/api/v6/image_editing/head_shot", &request)
            .await;
        assert_eq!(v["status"], "error", "{bad}: {v}");
        assert!(v["message"]["candidates"].is_array(), "{bad}: {v}");
    }
    // Within the wire's bound but over this model set's batch limit (4 images).
    let v = server
        .submit(&with(body(&internet), "candidates", json!(5)))
        .await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("candidates 5 exceed the batch limit of 4"),
        "{v}"
    );
}

/// `face_image` as a list: every photo (URLs and base64, mixed) reaches the analysis in order
/// and is kept for a restart; K+1 photos, an unreachable one or a face-less one are refused,
/// naming which.
#[tokio::test]
async fn several_photos_of_one_person() {
    use base64::Engine as _;
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let inline = base64::engine::general_purpose::STANDARD.encode(png_of_size(64, 64));
    let list = json!([
        internet.url("/face.png"),
        format!("data:image/png;base64,{inline}")
    ]);
    let v = server
        .submit(&with(body(&internet), "face_image", list))
        .await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(server.faces.photos(), vec![face_png(), png_of_size(64, 64)]);
    assert_eq!(
        v["meta"]["face_image"],
        format!(
            "{}, data:image/png;base64 ({} bytes)",
            internet.url("/face.png"),
            png_of_size(64, 64).len()
        )
    );
    let five = json!(vec![internet.url("/face.png"); 5]);
    let (_, v) = server
        .post(
            "/api/v6/image_editing/head_shot",
            &with(body(&internet), "face_image", five),
        )
        .await;
    assert_eq!(
        v["message"]["face_image"],
        json!(["The face image list may hold at most 4 photos, got 5."])
    );

    let unreachable = json!([internet.url("/face.png"), internet.url("/missing.png")]);
    let (_, v) = server
        .post(
            "/api/v6/image_editing/head_shot",
            &with(body(&internet), "face_image", unreachable),
        )
        .await;
    let message = v["message"]["face_image"][0].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "The face image 2 of 2 cannot be used: the face image could not be downloaded"
        ),
        "{v}"
    );

    // Not an image at all: the server's header check names it before any work.
    let not_an_image =
        base64::engine::general_purpose::STANDARD.encode(headshot_test_support::FACELESS_PHOTO);
    let list = json!([
        internet.url("/face.png"),
        internet.url("/face.png"),
        not_an_image
    ]);
    let (_, v) = server
        .post(
            "/api/v6/image_editing/head_shot",
            &with(body(&internet), "face_image", list),
        )
        .await;
    let message = v["message"]["face_image"][0].as_str().unwrap_or_default();
    assert!(
        message
            .starts_with("The face image 3 of 3 cannot be used: the face image could not be read"),
        "{v}"
    );
}
