//! The HTTP contract of wire.md against the real router, with a scripted generator double.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

async fn setup() -> (TestServer, Internet) {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    (server, internet)
}

#[tokio::test]
async fn documented_example_body_verbatim() {
    let (server, internet) = setup().await;
    // The example of head_shot_endpoint.txt, byte for byte except the face image URL. Its key
    // is "", so the key travels in the `key` header.
    let raw = headshot_test_support::wire::documented_example(&internet.url("/face.png"));
    let response = client()
        .post(server.url("/api/v6/image_editing/head_shot"))
        .header("Content-Type", "application/json")
        .header("key", KEY)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.unwrap();
    assert_eq!(keys(&v), sorted(&SUCCESS_KEYS), "{v}");
    assert_eq!(v["status"], "success");
    assert!(v["generationTime"].as_f64().unwrap() >= 0.0);
    assert!(v["id"].is_u64());
    assert_eq!(v["nsfw_content_detected"], false);
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(v["proxy_links"], v["output"]);
    let meta = &v["meta"];
    assert_eq!(keys(meta), sorted(&META_KEYS));
    let prefix = meta["file_prefix"].as_str().unwrap();
    assert!(prefix.len() >= 32, "prefix should be unguessable: {prefix}");
    assert_eq!(output[0], server.url(&format!("/outputs/{prefix}-0.png")));
    assert_eq!(meta["base64"], "no");
    assert_eq!(meta["face_image"], internet.url("/face.png"));
    assert_eq!(meta["guidance_scale"], 7.5);
    assert_eq!(meta["height"], 512);
    assert_eq!(meta["width"], 512);
    assert!(meta["negative_prompt"]
        .as_str()
        .unwrap()
        .starts_with("anime, cartoon"));
    assert_eq!(meta["num_inference_steps"], 21);
    assert_eq!(meta["outdir"], "out");
    assert_eq!(meta["prompt"], "pretty woman");
    assert_eq!(meta["safety_checker"], "no");
    assert_eq!(meta["safety_checker_type"], "blur");
    assert_eq!(meta["samples"], 1);
    assert_eq!(meta["temp"], "yes");
    // seed null: a random seed was chosen, echoed, and used.
    let seed = meta["seed"].as_u64().unwrap();
    assert_eq!(server.generator.jobs.lock().unwrap()[0].seed, seed);
    assert_eq!(
        server.generator.jobs.lock().unwrap()[0].safety_checker,
        None
    );

    let (status, png) = download(output[0].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
}

#[tokio::test]
async fn meta_echoes_normalised_values_and_jobs_use_them() {
    let (server, internet) = setup().await;
    let v = server
        .submit(&json!({
            "key": KEY, "prompt": "p", "image": internet.url("/face.png"), "width": "300",
            "height": 1000, "num_inference_steps": 20, "s_scale": 7.5, "guidance_scale": "3",
            "samples": "2", "seed": "4029484891", "safety_checker": "yes",
            "safety_checker_type": "pixelate", "style": "realistic", "enhance_prompt": "no"
        }))
        .await;
    assert_eq!(v["status"], "success", "{v}");
    let meta = &v["meta"];
    assert_eq!(
        (meta["width"].as_u64(), meta["height"].as_u64()),
        (Some(232), Some(768))
    );
    assert_eq!(meta["num_inference_steps"], 21);
    assert_eq!(meta["guidance_scale"], 3.0);
    assert_eq!(meta["samples"], 2);
    assert_eq!(meta["seed"], 4029484891u64);
    assert_eq!(meta["safety_checker"], "yes");
    assert_eq!(meta["safety_checker_type"], "pixelate");
    assert_eq!(v["output"].as_array().unwrap().len(), 2);
    let job = server.generator.jobs.lock().unwrap()[0].clone();
    assert_eq!(
        (job.width, job.height, job.num_inference_steps, job.samples),
        (232, 768, 21, 2)
    );
    assert_eq!(job.s_scale, 2.0);
    assert_eq!(job.seed, 4029484891);
    assert_eq!(
        job.safety_checker,
        Some(headshot_core::CensorType::Pixelate)
    );
    assert_eq!(server.faces.photos()[0], face_png());
}

#[tokio::test]
async fn scheduler_karras_sigmas_and_clip_skip_reach_the_job() {
    use headshot_core::SchedulerName;
    let (server, internet) = setup().await;
    let chosen = with(
        with(
            with(
                body(&internet),
                "scheduler",
                json!("DPMSolverMultistepScheduler"),
            ),
            "use_karras_sigmas",
            json!(true),
        ),
        "clip_skip",
        json!(2),
    );
    let v = server.submit(&chosen).await;
    assert_eq!(v["status"], "success", "{v}");
    let job = server.generator.jobs.lock().unwrap()[0].clone();
    assert_eq!(job.model.scheduler, Some(SchedulerName::DpmSolverMultistep));
    assert_eq!(job.model.karras_sigmas, Some(true));
    assert_eq!(job.model.clip_skip, 2);

    let v = server
        .submit(&with(body(&internet), "scheduler", json!("PNDMScheduler")))
        .await;
    assert_eq!(v["status"], "error", "{v}");
    let message = v["message"]["scheduler"][0].as_str().unwrap();
    for known in SchedulerName::ALL {
        assert!(message.contains(known.as_str()), "{message}");
    }
    // Euler ancestral has no Karras sigmas: refused, not ignored.
    let v = server
        .submit(&with(
            with(
                body(&internet),
                "scheduler",
                json!("EulerAncestralDiscreteScheduler"),
            ),
            "use_karras_sigmas",
            json!(true),
        ))
        .await;
    assert_eq!(v["status"], "error", "{v}");
    let message = v["message"]["use_karras_sigmas"][0].as_str().unwrap();
    assert!(message.contains("DPMSolverMultistepScheduler"), "{message}");
    assert_eq!(server.generator.jobs.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn nsfw_flag_is_reported() {
    let (server, internet) = setup().await;
    let v = server
        .submit(&with(body(&internet), "prompt", json!("x [nsfw]")))
        .await;
    assert_eq!(v["nsfw_content_detected"], true);
}

#[tokio::test]
async fn wrong_or_missing_key() {
    let (server, internet) = setup().await;
    for b in [
        with(body(&internet), "key", json!("nope")),
        with(body(&internet), "key", json!(null)),
    ] {
        let v = server.submit(&b).await;
        assert_eq!(keys(&v), sorted(&["message", "status", "tip"]));
        assert_eq!(v["status"], "error");
        assert_eq!(v["message"], "Invalid Api Key");
    }
    // A valid key in a header is accepted (`key`, or `Authorization: Bearer`).
    for (name, value) in [
        ("key", KEY.to_string()),
        ("authorization", format!("Bearer {KEY}")),
    ] {
        let v: Value = client()
            .post(server.url("/api/v6/image_editing/head_shot"))
            .header(name, value)
            .json(&with(body(&internet), "key", json!("")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{name}: {v}");
    }
    let calls = server
        .generator
        .calls
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(calls, 2, "refused requests never reach the generator");
    let (status, v) = server
        .post("/api/v6/image_editing/fetch/1", &json!({"key": "nope"}))
        .await;
    assert_eq!(
        (status, v["message"].clone()),
        (200, json!("Invalid Api Key"))
    );
}

#[tokio::test]
async fn missing_prompt_and_face_image() {
    let (server, internet) = setup().await;
    let mut b = body(&internet);
    b.as_object_mut().unwrap().remove("prompt");
    assert_eq!(
        server.submit(&b).await,
        json!({"status": "error", "message": {"prompt": ["The prompt field is required."]}})
    );
    let b = with(body(&internet), "face_image", json!(""));
    assert_eq!(
        server.submit(&b).await,
        json!({"status": "error", "message": {"face_image": ["The face image field is required."]}})
    );
}

async fn face_image_error(server: &TestServer, internet: &Internet, face: Value) -> String {
    let v = server
        .submit(&with(body(internet), "face_image", face))
        .await;
    assert_eq!(keys(&v), sorted(&["message", "status"]), "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(keys(&v["message"]), ["face_image"]);
    v["message"]["face_image"][0].as_str().unwrap().to_string()
}

#[tokio::test]
async fn unreadable_face_images() {
    let (server, internet) = setup().await;
    let text = base64::engine::general_purpose::STANDARD.encode(b"this is not an image at all");
    let m = face_image_error(
        &server,
        &internet,
        json!(format!("data:image/png;base64,{text}")),
    )
    .await;
    assert!(m.contains("could not be read"), "{m}");
    let m = face_image_error(&server, &internet, json!(internet.url("/not-an-image.txt"))).await;
    assert!(m.contains("could not be read"), "{m}");
    let m = face_image_error(&server, &internet, json!(internet.url("/missing.png"))).await;
    assert!(m.contains("404"), "{m}");
    let m = face_image_error(&server, &internet, json!(internet.url("/redirect-loop"))).await;
    assert!(m.contains("redirects"), "{m}");
    let m = face_image_error(&server, &internet, json!("%%%not base64%%%")).await;
    assert!(m.contains("URL, a data URI or base64"), "{m}");
    // Redirects are followed.
    let v = server
        .submit(&with(
            body(&internet),
            "face_image",
            json!(internet.url("/redirect")),
        ))
        .await;
    assert_eq!(v["status"], "success", "{v}");
}

#[tokio::test]
async fn oversized_face_images() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.max_image_bytes = 20_000;
        c.max_image_pixels = 1000 * 1000;
    })
    .await;
    let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 30_000]);
    let m = face_image_error(&server, &internet, json!(big)).await;
    assert!(m.contains("20000 bytes"), "{m}");
    // 1500x1500 PNG: small in bytes but over the pixel limit.
    let m = face_image_error(&server, &internet, json!(internet.url("/big.png"))).await;
    assert!(m.contains("pixels") || m.contains("bytes"), "{m}");
}

#[tokio::test]
async fn no_face_is_a_failed_job() {
    let mut internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let b = with(
        with(body(&internet), "prompt", json!("[noface]")),
        "webhook",
        json!(internet.url("/webhook")),
    );
    let v = server.submit(&with(b, "track_id", json!("abc-7"))).await;
    assert_eq!(
        keys(&v),
        sorted(&["id", "message", "output", "status"]),
        "{v}"
    );
    assert_eq!(v["status"], "failed");
    assert_eq!(v["output"], "");
    assert!(v["message"].as_str().unwrap().contains("No face"));
    let id = v["id"].as_u64().unwrap();
    assert_eq!(server.fetch(id).await, v);
    let hook = internet.next_webhook().await;
    assert_eq!(
        hook,
        json!({"status": "failed", "id": id, "message": v["message"], "track_id": "abc-7"})
    );
}

#[tokio::test]
async fn private_urls_refused_without_the_flag() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.allow_private_urls = false
    })
    .await;
    for url in [
        internet.url("/face.png"),
        format!("http://localhost:{}/face.png", internet.addr.port()),
        "http://[::1]/face.png".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.1/face.png".to_string(),
    ] {
        let m = face_image_error(&server, &internet, json!(url)).await;
        assert!(
            m.contains("refused") || m.contains("non-public"),
            "{url}: {m}"
        );
    }
    let v = server
        .submit(&with(
            body(&internet),
            "webhook",
            json!("http://127.0.0.1:9/hook"),
        ))
        .await;
    // The face URL is refused first; a webhook is checked at delivery (also refused).
    assert_eq!(v["status"], "error");
    // The same loopback URL works on a server started with --allow-private-urls.
    let open = TestServer::start(ScriptedGenerator::default(), |c| {
        c.allow_private_urls = true
    })
    .await;
    assert_eq!(open.submit(&body(&internet)).await["status"], "success");
}

#[tokio::test]
async fn processing_then_success_via_fetch_and_queue_full() {
    let internet = Internet::start(0).await;
    let gate = Gate::closed();
    let generator = ScriptedGenerator {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let server = TestServer::start(generator, |c| {
        c.queue_size = 1;
        c.sync_wait_secs = 0.3;
    })
    .await;

    let v = server
        .submit(&with(body(&internet), "samples", json!(2)))
        .await;
    assert_eq!(keys(&v), sorted(&PROCESSING_KEYS), "{v}");
    assert_eq!(v["status"], "processing");
    assert_eq!(v["message"], "Try to fetch request after seconds estimated");
    assert!(v["tip"].is_string());
    assert!(v["eta"].as_f64().unwrap() >= 0.0);
    let id = v["id"].as_u64().unwrap();
    assert_eq!(
        v["fetch_result"],
        server.url(&format!("/api/v6/image_editing/fetch/{id}"))
    );
    assert_eq!(v["output"], json!([]));
    assert_eq!(v["proxy_links"], json!([]));
    assert_eq!(keys(&v["meta"]), sorted(&META_KEYS));
    let future = v["future_links"].as_array().unwrap().clone();
    assert_eq!(future.len(), 2);

    // The one queue slot is taken: the documented rate-limit error.
    let full = server.submit(&body(&internet)).await;
    assert_eq!(keys(&full), sorted(&["message", "retry_after", "status"]));
    assert_eq!(full["status"], "error");
    assert_eq!(
        full["message"],
        "Rate limit exceeded. Maximum 1 queued requests allowed."
    );
    assert!(full["retry_after"].as_u64().unwrap() >= 1);

    // Still running: the fetch processing shape, on every fetch path.
    // Plus the progress extension: held at the gate (no step reported) or still in line.
    let processing =
        json!({"status": "processing", "id": id, "message": "try again later.", "output": ""});
    let fetched = server.fetch(id).await;
    assert_eq!(documented_part(&fetched), processing);
    assert!(
        fetched["progress"] == json!({"step": 0, "total": 21}) || fetched["queue_position"] == 0,
        "{fetched}"
    );
    let fetch_result = v["fetch_result"].as_str().unwrap();
    let response = client()
        .post(fetch_result)
        .json(&json!({"key": KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        documented_part(&response.json::<Value>().await.unwrap()),
        processing
    );

    gate.open();
    let done = server.fetch_until_done(id).await;
    assert_eq!(
        keys(&done),
        sorted(&["face_similarity", "faces_found", "id", "output", "status"])
    );
    assert_eq!(done["status"], "success");
    assert_eq!(done["id"], id);
    assert_eq!(
        done["output"],
        json!(future),
        "future_links are the final URLs"
    );
    for url in &future {
        let (status, png) = download(url.as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert!(png.starts_with(b"\x89PNG"));
    }
    let paths = [
        format!("/api/v1/image_editing/fetch/{id}"),
        format!("/api/v1/enterprise/image_editing/fetch/{id}"),
        format!("/api/v6/images/fetch/{id}"),
        format!("/api/v3/fetch/{id}"),
    ];
    for path in &paths {
        let (status, v) = server.post(path, &json!({"key": KEY})).await;
        assert_eq!((status, &v), (200, &done), "{path}");
        let (status, v) = server.get(&format!("{path}?key={KEY}")).await;
        assert_eq!((status, &v), (200, &done), "GET {path}");
    }
    let (_, v) = server
        .post(
            "/api/v6/images/fetch",
            &json!({"key": KEY, "request_id": id.to_string()}),
        )
        .await;
    assert_eq!(v, done);
    let (_, v) = server
        .post(
            "/api/v6/images/fetch",
            &json!({"key": KEY, "request_id": id}),
        )
        .await;
    assert_eq!(v, done);
    let (_, v) = server
        .get(&format!("/api/v6/images/fetch?key={KEY}&request_id={id}"))
        .await;
    assert_eq!(v, done);

    // The slot is free again.
    assert_eq!(server.submit(&body(&internet)).await["status"], "success");
}

#[tokio::test]
async fn fetch_of_unknown_id() {
    let (server, _internet) = setup().await;
    let not_found =
        json!({"status": "failed", "id": "", "message": "Request not found", "output": ""});
    assert_eq!(server.fetch(987654).await, not_found);
    let (_, v) = server
        .post("/api/v6/image_editing/fetch/abc", &json!({"key": KEY}))
        .await;
    assert_eq!(v, not_found);
    let (_, v) = server
        .post("/api/v6/images/fetch", &json!({"key": KEY}))
        .await;
    assert_eq!(v, not_found);
}

#[tokio::test]
async fn webhook_delivery_with_track_id_and_retries() {
    let mut internet = Internet::start(2).await; // the receiver fails twice first
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for track_id in [json!(12345), json!("order-9")] {
        let b = with(
            with(body(&internet), "webhook", json!(internet.url("/webhook"))),
            "track_id",
            track_id.clone(),
        );
        let v = server.submit(&b).await;
        assert_eq!(v["status"], "success");
        let hook = internet.next_webhook().await;
        let mut expected_keys = SUCCESS_KEYS.to_vec();
        expected_keys.push("track_id");
        assert_eq!(keys(&hook), sorted(&expected_keys));
        assert_eq!(hook["track_id"], track_id);
        assert_eq!(hook["id"], v["id"]);
        assert_eq!(hook["output"], v["output"]);
        assert_eq!(hook["meta"], v["meta"]);
    }
}

#[tokio::test]
async fn base64_in_and_out() {
    let (server, _internet) = setup().await;
    let face = base64::engine::general_purpose::STANDARD.encode(face_png());
    for input in [format!("data:image/png;base64,{face}"), face.clone()] {
        let v = server
            .submit(&json!({"key": KEY, "prompt": "p", "face_image": input, "base64": "true"}))
            .await;
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["meta"]["base64"], "yes");
        let url = v["output"][0].as_str().unwrap();
        assert!(url.ends_with("-0.base64"), "{url}");
        let (status, text) = download(url).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(text).unwrap();
        let data = text
            .strip_prefix("data:image/png;base64,")
            .expect("a PNG data URI");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
    }
    assert_eq!(server.faces.photos()[0], face_png());
}

#[tokio::test]
async fn outputs_expire_after_the_ttl() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| c.output_ttl_secs = 1).await;
    let v = server.submit(&body(&internet)).await;
    let url = v["output"][0].as_str().unwrap().to_string();
    let (status, _) = download(&url).await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if download(&url).await.0 == 404 {
            gone = true;
            break;
        }
    }
    assert!(gone, "{url} still served long after its TTL");
    assert_eq!(
        download(&server.url("/outputs/..%2Fjobs.redb")).await.0,
        404
    );
}

#[tokio::test]
async fn restart_keeps_finished_jobs_fetchable() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let v = server.submit(&body(&internet)).await;
    let id = v["id"].as_u64().unwrap();
    let before = server.fetch(id).await;
    assert_eq!(before["status"], "success");
    let data_dir = server.data_dir.clone();
    let tmp = server.stop().await;

    let again = TestServer::start_in(data_dir, ScriptedGenerator::default(), |_| {}).await;
    let after = again.fetch(id).await;
    assert_eq!(after["status"], "success");
    assert_eq!(after["id"], id);
    // URLs use the new public address; the files are the same.
    let url = after["output"][0].as_str().unwrap();
    assert_eq!(download(url).await.0, 200);
    let v2 = again.submit(&body(&internet)).await;
    assert!(
        v2["id"].as_u64().unwrap() > id,
        "ids keep growing across restarts"
    );
    drop(tmp);
}

#[tokio::test]
async fn malformed_json_gets_the_error_shape() {
    let (server, _internet) = setup().await;
    let (status, v) = server
        .post_raw("/api/v6/image_editing/head_shot", "{not json")
        .await;
    assert_eq!(status, 400);
    assert_eq!(keys(&v), sorted(&["message", "status"]));
    assert_eq!(v["status"], "error");
}

#[tokio::test]
async fn every_submit_path_answers() {
    let (server, internet) = setup().await;
    for path in [
        "/api/v6/image_editing/head_shot",
        "/api/v1/image_editing/head_shot",
        "/api/v1/enterprise/image_editing/head_shot",
    ] {
        let (status, v) = server.post(path, &body(&internet)).await;
        assert_eq!(
            (status, v["status"].clone()),
            (200, json!("success")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let (server, internet) = setup().await;
    server.submit(&body(&internet)).await;
    let (status, v) = server.get("/health").await;
    assert_eq!((status, v["status"].clone()), (200, json!("ok")));
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!((status, ready["status"].clone()), (200, json!("ok")));
    assert_eq!(ready["devices_alive"], ready["devices"]);
    let (status, live) = server.get("/health/live").await;
    assert_eq!((status, live), (200, json!({"status": "alive"})));
    let text = metrics_text(&server.url("/metrics")).await;
    assert!(text.contains("headshot_submit_requests_total"), "{text}");
}

#[tokio::test]
async fn a_panicking_job_fails_alone() {
    let (server, internet) = setup().await;
    let v = server
        .submit(&with(body(&internet), "prompt", json!("[panic]")))
        .await;
    assert_eq!(
        keys(&v),
        sorted(&["id", "message", "output", "status"]),
        "{v}"
    );
    assert_eq!(v["status"], "failed");
    assert!(
        !v["message"].as_str().unwrap().contains("scripted"),
        "internal details stay in the log"
    );
    // The worker survived.
    assert_eq!(server.submit(&body(&internet)).await["status"], "success");
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_at_submit() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.allow_private_urls = false
    })
    .await;
    let face = base64::engine::general_purpose::STANDARD.encode(face_png());
    let v = server
        .submit(&json!({"key": KEY, "prompt": "p", "face_image": face, "webhook": internet.url("/webhook")}))
        .await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(keys(&v["message"]), ["webhook"]);
    assert!(v["message"]["webhook"][0]
        .as_str()
        .unwrap()
        .contains("refused"));
}

#[tokio::test]
async fn oversized_bodies_get_the_error_shape() {
    let internet = Internet::start(0).await;
    let server =
        TestServer::start(ScriptedGenerator::default(), |c| c.max_image_bytes = 10_000).await;
    let huge = "A".repeat(2 * 1024 * 1024);
    let (status, v) = server
        .post(
            "/api/v6/image_editing/head_shot",
            &with(body(&internet), "face_image", json!(huge)),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(keys(&v), sorted(&["message", "status"]));
    assert_eq!(v["status"], "error");
}

#[tokio::test]
async fn jobs_interrupted_by_a_restart_are_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let stores =
            headshot_server::Stores::open_local(tmp.path(), Duration::from_secs(3600)).unwrap();
        let id = stores.jobs.next_id().unwrap();
        let record = headshot_core::store::JobRecord::queued(
            id,
            json!({}),
            "0123456789abcdef0123456789abcdef",
            headshot_core::store::OutputFormat::Png,
            1,
        );
        stores.jobs.insert(&record).unwrap();
        id
    };
    let server = TestServer::start_in(
        tmp.path().to_path_buf(),
        ScriptedGenerator::default(),
        |_| {},
    )
    .await;
    let v = server.fetch(id).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["id"], id);
    assert!(v["message"].as_str().unwrap().contains("restarted"));
    server.stop().await;
}

#[tokio::test]
async fn style_is_accepted_and_echoed_beside_meta() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let styled = server
        .submit(&with(body(&internet), "style", json!("realistic")))
        .await;
    assert_eq!(styled["status"], "success", "{styled}");
    assert_eq!(styled["style"], "realistic");
    // `meta` keeps exactly the documented keys.
    assert_eq!(keys(&styled["meta"]), sorted(&META_KEYS));
    let mut expected = SUCCESS_KEYS.to_vec();
    expected.push("style");
    assert_eq!(keys(&styled), sorted(&expected));
    // Without `style`, the documented shape exactly.
    let plain = server.submit(&body(&internet)).await;
    assert_eq!(keys(&plain), sorted(&SUCCESS_KEYS));
    // It changes nothing the generator sees (the hosted API documents no effect).
    let jobs = server.generator.rendered();
    assert_eq!(jobs[0], jobs[1]);
    // A style that is not a string gets the validation shape.
    let v = server
        .submit(&with(body(&internet), "style", json!(["a"])))
        .await;
    assert_eq!(v["status"], "error");
    assert_eq!(v["message"]["style"][0], "The style must be a string.");

    // Queued answers echo it too.
    let server = TestServer::start(ScriptedGenerator::default(), |c| c.sync_wait_secs = 0.0).await;
    let queued = server
        .submit(&with(body(&internet), "style", json!("anime")))
        .await;
    assert_eq!(queued["status"], "processing");
    assert_eq!(queued["style"], "anime");
}

#[tokio::test]
async fn model_ids_are_checked_against_the_configured_sets() {
    let face = base64::engine::general_purpose::STANDARD.encode(face_png());
    let request = |id: &str| json!({"key": KEY, "prompt": "p", "face_image": face, "model_id": id});
    let tiny = headshot_test_support::workspace().join("models/tiny.toml");
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.model.models = tiny.clone();
        c.model.model_sets = vec!["realistic=/models/realistic.safetensors".parse().unwrap()];
    })
    .await;
    for served in ["realistic", "tiny"] {
        let v = server.submit(&request(served)).await;
        assert_eq!(v["status"], "success", "{served}: {v}");
    }
    let v = server.submit(&request("dreamy")).await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(keys(&v["message"]), ["model_id"]);
    assert_eq!(
        v["message"]["model_id"][0],
        "The model id dreamy is not configured on this server; it serves tiny, realistic (leave model_id out for tiny)."
    );
}

#[tokio::test]
async fn lora_names_are_checked_against_the_lora_folder() {
    let face = base64::engine::general_purpose::STANDARD.encode(face_png());
    let request = |lora: &str| json!({"key": KEY, "prompt": "p", "face_image": face, "lora_model": lora, "lora_strength": 0.7});
    let loras = headshot_test_support::workspace().join("tests/fixtures/tiny/loras");
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.model.lora_dir = Some(loras.clone())
    })
    .await;
    let v = server.submit(&request("tiny-style")).await;
    assert_eq!(v["status"], "success", "{v}");
    let v = server.submit(&request("tiny-style,missing")).await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(keys(&v["message"]), ["lora_model"]);
    let message = v["message"]["lora_model"][0].as_str().unwrap();
    assert!(
        message.starts_with("The lora model missing is not in this server's LoRA folder ")
            && message.contains(&loras.display().to_string())
            && message.ends_with("(it has: tiny-style)."),
        "{message}"
    );
    // Without --lora-dir every LoRA is refused.
    let plain = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let v = plain.submit(&request("tiny-style")).await;
    assert_eq!(keys(&v["message"]), ["lora_model"], "{v}");
    assert!(v["message"]["lora_model"][0]
        .as_str()
        .unwrap()
        .contains("this server has no LoRA folder"));
}
