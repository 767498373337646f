//! Normalisation of head shot requests as wire.md describes it.

use headshot_core::wire::*;
use headshot_core::CensorType;
use serde_json::{json, Value};

const FACE_URL: &str = "https://example.com/face.jpg";

fn ok(body: Value) -> HeadShotRequest {
    HeadShotRequest::from_json(&body, 1234).unwrap_or_else(|e| panic!("{body} rejected: {e:?}"))
}

fn err(body: Value) -> ValidationErrors {
    match HeadShotRequest::from_json(&body, 1234) {
        Ok(r) => panic!("{body} accepted as {r:?}"),
        Err(e) => e,
    }
}

fn base() -> Value {
    json!({"key": "k", "prompt": "pretty woman", "face_image": FACE_URL})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = base();
    body[field] = value;
    body
}

#[test]
fn documented_example_body_verbatim() {
    let example = headshot_test_support::wire::documented_example(
        headshot_test_support::wire::DOCUMENTED_FACE_IMAGE,
    );
    let body: Value = serde_json::from_str(&example).unwrap();
    let r = ok(body);
    assert_eq!(r.key, None, "an empty key is absent");
    assert_eq!(
        (r.width, r.height, r.samples, r.num_inference_steps),
        (512, 512, 1, 21)
    );
    assert_eq!(r.guidance_scale, 7.5);
    assert_eq!(r.s_scale, 1.0);
    assert!(!r.safety_checker);
    assert_eq!(r.safety_checker_type, CensorType::Blur);
    assert!(!r.base64);
    assert_eq!((r.seed, r.seed_was_random), (1234, true));
    assert_eq!(r.webhook, None);
    assert_eq!(r.track_id, None);
    assert!(
        matches!(r.face_image, FaceImageInput::Url(ref u) if u.starts_with("https://media.allure.com/"))
    );

    let meta = serde_json::to_value(r.meta("prefix")).unwrap();
    let expected = json!({
        "base64": "no",
        "face_image": "https://media.allure.com/photos/647f876463cd1ef47aab9c88/3:2/w_2465,h_1643,c_limit/angelina%20jolie%20blonde%20hair%20chloe.jpg",
        "file_prefix": "prefix",
        "guidance_scale": 7.5,
        "height": 512,
        "negative_prompt": "anime, cartoon, drawing, big nose, long nose, fat, ugly, big lips, big mouth, face proportion mismatch, unrealistic, monochrome, lowres, bad anatomy, worst quality, low quality, blurry",
        "num_inference_steps": 21,
        "outdir": "out",
        "prompt": "pretty woman",
        "safety_checker": "no",
        "safety_checker_type": "blur",
        "samples": 1,
        "seed": 1234,
        "temp": "yes",
        "width": 512
    });
    assert_eq!(meta, expected);
}

#[test]
fn defaults_match_the_official_sdk() {
    let r = ok(base());
    assert_eq!(r.key.as_deref(), Some("k"));
    assert_eq!((r.width, r.height), (512, 512));
    assert_eq!(r.samples, 1);
    assert_eq!(r.num_inference_steps, 21);
    assert_eq!(r.guidance_scale, 7.5);
    assert_eq!(r.s_scale, 1.0);
    assert!(
        r.safety_checker,
        "the SDK defaults the safety checker to on"
    );
    assert_eq!(r.safety_checker_type, CensorType::Blur);
    assert!(!r.base64);
    assert_eq!(r.negative_prompt, "");
}

#[test]
fn sdk_default_values_are_normalised_not_rejected() {
    // What modelslab-py 0.2.3 sends by default.
    let r = ok(json!({
        "key": "k", "prompt": "p", "face_image": FACE_URL, "width": 512, "height": 512,
        "num_inference_steps": 20, "guidance_scale": 7.5, "s_scale": 7.5, "samples": 1,
        "safety_checker": true, "safety_checker_type": "black", "base64": false,
        "style": "realistic"
    }));
    assert_eq!(r.num_inference_steps, 21);
    assert_eq!(r.s_scale, 2.0);
    assert_eq!(r.guidance_scale, 7.5);
    assert_eq!(r.safety_checker_type, CensorType::Black);
}

#[test]
fn steps_snap_to_nearest_allowed() {
    for (sent, used) in [
        (json!(1), 21),
        (json!(20), 21),
        (json!("21"), 21),
        (json!(26), 21),
        (json!(27), 31),
        (json!(30), 31),
        (json!("31"), 31),
        (json!(36), 31),
        (json!(37), 41),
        (json!(41), 41),
        (json!(1000), 41),
        (json!(-5), 21),
        (json!(30.0), 31),
    ] {
        assert_eq!(
            ok(with("num_inference_steps", sent.clone())).num_inference_steps,
            used,
            "{sent}"
        );
    }
}

#[test]
fn scales_are_clamped_and_echoed() {
    assert_eq!(ok(with("s_scale", json!("0.5"))).s_scale, 0.5);
    assert_eq!(ok(with("s_scale", json!(-1))).s_scale, 0.0);
    assert_eq!(ok(with("s_scale", json!(9))).s_scale, 2.0);
    assert_eq!(ok(with("guidance_scale", json!("3"))).guidance_scale, 3.0);
    assert_eq!(ok(with("guidance_scale", json!(0.2))).guidance_scale, 1.0);
    assert_eq!(ok(with("guidance_scale", json!(100))).guidance_scale, 20.0);
    let r = ok(with("guidance_scale", json!(4.25)));
    assert_eq!(
        serde_json::to_value(r.meta("x")).unwrap()["guidance_scale"],
        json!(4.25)
    );
}

#[test]
fn sizes_are_rounded_and_limited() {
    let size = |w: Value, h: Value| {
        let mut body = base();
        body["width"] = w;
        body["height"] = h;
        let r = ok(body);
        (r.width, r.height)
    };
    assert_eq!(size(json!("512"), json!("768")), (512, 768));
    assert_eq!(size(json!(768), json!(512)), (768, 512));
    assert_eq!(size(json!(500), json!(300)), (504, 304));
    assert_eq!(size(json!(1024), json!(1024)), (512, 512));
    assert_eq!(size(json!(1024), json!(1536)), (512, 768));
    assert_eq!(size(json!(2000), json!(1000)), (768, 384));
    assert_eq!(size(json!(768), json!(768)), (512, 512));
    assert_eq!(size(json!(10), json!(10)), (64, 64));
    assert_eq!(size(json!(null), json!("")), (512, 512));
    for w in [1i64, 7, 100, 511, 513, 640, 767, 769, 4096, i64::MAX, -4] {
        for h in [1i64, 9, 300, 512, 700, 768, 10_000] {
            let (ow, oh) = size(json!(w), json!(h));
            assert!(ow % 8 == 0 && oh % 8 == 0, "{w}x{h} -> {ow}x{oh}");
            assert!(
                ow.max(oh) <= 768 && ow.min(oh) <= 512,
                "{w}x{h} -> {ow}x{oh}"
            );
            assert!(ow >= 64 && oh >= 64, "{w}x{h} -> {ow}x{oh}");
        }
    }
}

#[test]
fn samples_limited_and_one_above_512x512() {
    assert_eq!(ok(with("samples", json!("2"))).samples, 2);
    assert_eq!(ok(with("samples", json!(5))).samples, 2);
    assert_eq!(ok(with("samples", json!(0))).samples, 1);
    let mut body = with("samples", json!(2));
    body["height"] = json!(768);
    assert_eq!(ok(body).samples, 1);
}

#[test]
fn seeds_fixed_random_and_echoed() {
    let r = ok(with("seed", json!("4029484891")));
    assert_eq!((r.seed, r.seed_was_random), (4029484891, false));
    assert_eq!(r.meta("x").seed, 4029484891);
    assert_eq!(ok(with("seed", json!(7))).seed, 7);
    for random in [json!(null), json!(""), json!(-1)] {
        let r = ok(with("seed", random.clone()));
        assert_eq!((r.seed, r.seed_was_random), (1234, true), "{random}");
        assert_eq!(r.meta("x").seed, 1234);
    }
    assert!(err(with("seed", json!("abc"))).fields().eq(["seed"]));
}

#[test]
fn loose_booleans() {
    for (v, b) in [
        (json!(true), true),
        (json!("true"), true),
        (json!("yes"), true),
        (json!(1), true),
        (json!(false), false),
        (json!("false"), false),
        (json!("no"), false),
        (json!("0"), false),
    ] {
        assert_eq!(ok(with("base64", v.clone())).base64, b, "{v}");
        assert_eq!(
            ok(with("safety_checker", v.clone())).safety_checker,
            b,
            "{v}"
        );
    }
    let e = err(with("base64", json!("sometimes")));
    assert_eq!(
        e.0["base64"],
        vec!["The base64 field must be true or false.".to_string()]
    );
}

#[test]
fn missing_prompt_uses_the_documented_message() {
    let mut body = base();
    body.as_object_mut().unwrap().remove("prompt");
    let e = err(body);
    assert_eq!(
        serde_json::to_value(ValidationErrorResponse::new(&e)).unwrap(),
        json!({"status": "error", "message": {"prompt": ["The prompt field is required."]}})
    );
    assert_eq!(
        err(with("prompt", json!(""))).0["prompt"],
        vec!["The prompt field is required."]
    );
    assert_eq!(
        err(with("prompt", json!(null)))
            .fields()
            .collect::<Vec<_>>(),
        ["prompt"]
    );
}

#[test]
fn missing_face_image_and_alias() {
    let mut body = base();
    body.as_object_mut().unwrap().remove("face_image");
    let e = err(body.clone());
    assert_eq!(e.0["face_image"], vec!["The face image field is required."]);
    body["image"] = json!(FACE_URL);
    assert_eq!(ok(body).face_image, FaceImageInput::Url(FACE_URL.into()));
}

#[test]
fn every_problem_reported_at_once() {
    let e = err(json!({"width": "wide", "guidance_scale": "lots", "webhook": "ftp://x"}));
    let fields: Vec<_> = e.fields().collect();
    assert_eq!(
        fields,
        ["face_image", "guidance_scale", "prompt", "webhook", "width"]
    );
}

#[test]
fn face_image_data_uri_and_raw_base64() {
    let png = [0x89u8, b'P', b'N', b'G', 1, 2, 3];
    let r = ok(with(
        "face_image",
        json!("data:image/png;base64,iVBORwECAw=="),
    ));
    assert_eq!(
        r.face_image,
        FaceImageInput::Inline {
            bytes: png.to_vec(),
            mime: Some("image/png".into())
        }
    );
    assert_eq!(r.meta("x").face_image, "data:image/png;base64 (7 bytes)");
    let r = ok(with("face_image", json!("iVBORwEC\nAw==")));
    assert_eq!(
        r.face_image,
        FaceImageInput::Inline {
            bytes: png.to_vec(),
            mime: None
        }
    );
    for bad in [
        "not an image!",
        "data:image/png,abc",
        "data:image/png;base64,@@@",
        "ftp://x/y.png",
    ] {
        assert!(
            err(with("face_image", json!(bad)))
                .fields()
                .eq(["face_image"]),
            "{bad}"
        );
    }
    assert!(err(with("face_image", json!(42)))
        .fields()
        .eq(["face_image"]));
}

#[test]
fn webhook_and_track_id() {
    let mut body = with("webhook", json!("https://hooks.example.com/x"));
    body["track_id"] = json!(77);
    let r = ok(body);
    assert_eq!(r.webhook.as_deref(), Some("https://hooks.example.com/x"));
    assert_eq!(r.track_id, Some(json!(77)));
    assert_eq!(
        ok(with("track_id", json!("abc-1"))).track_id,
        Some(json!("abc-1"))
    );
    assert_eq!(ok(with("webhook", json!(""))).webhook, None);
    assert!(err(with("webhook", json!("not a url")))
        .fields()
        .eq(["webhook"]));
}

#[test]
fn safety_checker_type_and_type_alias() {
    assert_eq!(
        ok(with("safety_checker_type", json!("pixelate"))).safety_checker_type,
        CensorType::Pixelate
    );
    assert_eq!(
        ok(with("safety_checker_type", json!("Sensitive_Content_Text"))).safety_checker_type,
        CensorType::SensitiveContentText
    );
    assert_eq!(
        ok(with("type", json!("black"))).safety_checker_type,
        CensorType::Black
    );
    assert_eq!(
        ok(with("type", json!("portrait"))).safety_checker_type,
        CensorType::Blur
    );
    assert!(err(with("safety_checker_type", json!("rainbow")))
        .fields()
        .eq(["safety_checker_type"]));
}

#[test]
fn unknown_and_extra_fields_ignored() {
    let mut body = base();
    for (k, v) in [
        ("temp", json!("yes")),
        ("enhance_prompt", json!("no")),
        ("whatever", json!({"a": [1]})),
    ] {
        body[k] = v;
    }
    assert_eq!(ok(body), ok(base()));
}

#[test]
fn non_object_bodies_report_missing_fields() {
    for body in [json!([]), json!("x"), json!(3), json!(null)] {
        let fields: Vec<_> = err(body).fields().map(String::from).collect();
        assert_eq!(fields, ["face_image", "prompt"]);
    }
}

#[test]
fn job_carries_the_values_used() {
    let mut body = with("safety_checker_type", json!("pixelate"));
    body["seed"] = json!(99);
    body["num_inference_steps"] = json!(33);
    let job = ok(body).to_job(vec![1, 2, 3], Vec::new());
    assert_eq!(job.face_image, vec![1, 2, 3]);
    assert_eq!(job.settings.seed, 99);
    assert_eq!(job.settings.num_inference_steps, 31);
    assert_eq!(job.settings.safety_checker, Some(CensorType::Pixelate));
    assert_eq!(
        ok(with("safety_checker", json!("no")))
            .to_job(vec![], Vec::new())
            .settings
            .safety_checker,
        None
    );
}

#[test]
fn fetch_requests() {
    let f = FetchRequest::from_json(&json!({"key": "k", "request_id": "42"}));
    assert_eq!(
        (f.key.as_deref(), f.request_id, f.request_id_given),
        (Some("k"), Some(42), true)
    );
    assert_eq!(
        FetchRequest::from_json(&json!({"key": "k", "request_id": 42})).request_id,
        Some(42)
    );
    assert_eq!(
        FetchRequest::from_json(&json!({"id": 5})).request_id,
        Some(5)
    );
    let f = FetchRequest::from_json(&json!({"request_id": "nope"}));
    assert_eq!((f.request_id, f.request_id_given), (None, true));
    assert_eq!(
        FetchRequest::from_json(&json!(["x"])),
        FetchRequest::default()
    );
    assert_eq!(parse_request_id(" 12 "), Some(12));
    assert_eq!(parse_request_id("abc"), None);
}

#[test]
fn text_fields_are_bounded() {
    let limits = TextLimits {
        max_prompt_chars: 12,
        max_url_chars: 40,
        max_track_id_bytes: 8,
    };
    let check = |body: Value| HeadShotRequest::from_json_with_limits(&body, 1, &limits);
    // At the limit is fine; multi-byte characters count as one.
    assert!(check(with("prompt", json!("éééééééééééé"))).is_ok());
    assert!(check(with("track_id", json!("123456"))).is_ok());
    let refused = [
        (
            "prompt",
            json!("x".repeat(13)),
            "The prompt may not be greater than 12 characters.",
        ),
        (
            "negative_prompt",
            json!("y".repeat(13)),
            "The negative prompt may not be greater than 12 characters.",
        ),
        (
            "face_image",
            json!(format!("https://example.com/{}", "a".repeat(30))),
            "The face image URL may not be greater than 40 characters.",
        ),
        (
            "webhook",
            json!(format!("https://{}.example.com/", "h".repeat(40))),
            "The webhook URL may not be greater than 40 characters.",
        ),
        (
            "track_id",
            json!("1234567"),
            "The track id may not be greater than 8 bytes.",
        ),
        (
            "track_id",
            json!({"a": [1, 2, 3]}),
            "The track id may not be greater than 8 bytes.",
        ),
    ];
    for (field, value, message) in refused {
        let errors = check(with(field, value)).unwrap_err();
        assert_eq!(
            errors.0.get(field),
            Some(&vec![message.to_string()]),
            "{field}"
        );
    }
    // The defaults are what `from_json` applies.
    let long = "p".repeat(TextLimits::default().max_prompt_chars + 1);
    assert!(err(with("prompt", json!(long))).0.contains_key("prompt"));
}

#[test]
fn face_index_defaults_to_the_largest_face_and_refuses_negatives() {
    assert_eq!(ok(base()).face_index, 0);
    assert_eq!(ok(with("face_index", json!(2))).face_index, 2);
    assert_eq!(ok(with("face_index", json!("1"))).face_index, 1);
    assert_eq!(
        ok(with("face_index", json!(3)))
            .to_job(vec![], Vec::new())
            .settings
            .face_index,
        3
    );
    for bad in [json!(-1), json!("first"), json!(1.5), json!(1u64 << 40)] {
        let e = err(with("face_index", bad.clone()));
        assert!(e.fields().eq(["face_index"]), "{bad}: {e:?}");
    }
}

#[test]
fn face_image_may_list_several_photos_of_one_person() {
    let data_uri = "data:image/png;base64,iVBORw0KGgo=";
    let r = ok(with("face_image", json!([FACE_URL])));
    assert_eq!(r.face_image, FaceImageInput::Url(FACE_URL.into()));
    assert!(r.more_face_images.is_empty());
    assert_eq!(r.meta("x").face_image, FACE_URL);

    let mut alias = base();
    alias.as_object_mut().unwrap().remove("face_image");
    alias["image"] = json!([FACE_URL, data_uri, "iVBORw0KGgo="]);
    let r = ok(alias);
    assert_eq!(r.face_image, FaceImageInput::Url(FACE_URL.into()));
    assert_eq!(r.more_face_images.len(), 2);
    assert_eq!(
        r.meta("x").face_image,
        format!("{FACE_URL}, data:image/png;base64 (8 bytes), data:application/octet-stream;base64 (8 bytes)")
    );
    let job = r.to_job(vec![1], vec![vec![2], vec![3]]);
    assert_eq!(
        (job.face_image, job.more_face_images),
        (vec![1], vec![vec![2], vec![3]])
    );

    let too_many = vec![json!(FACE_URL); MAX_FACE_IMAGES + 1];
    let e = err(with("face_image", json!(too_many)));
    assert_eq!(
        e.0["face_image"],
        [format!(
            "The face image list may hold at most {MAX_FACE_IMAGES} photos, got {}.",
            MAX_FACE_IMAGES + 1
        )]
    );
    assert!(err(with("face_image", json!([])))
        .fields()
        .eq(["face_image"]));
    let e = err(with("face_image", json!([FACE_URL, 42])));
    assert_eq!(
        e.0["face_image"],
        ["The face image 2 of 2 cannot be used: the face image must be a URL, a data URI or base64 image data."]
    );
}

#[test]
fn style_is_kept_as_sent_and_changes_no_setting() {
    let styled = ok(with("style", json!("realistic")));
    assert_eq!(styled.style.as_deref(), Some("realistic"));
    assert_eq!(ok(base()).style, None);
    assert_eq!(
        ok(with("style", json!(""))).style,
        None,
        "blank means absent"
    );
    // Not a job setting: the same job either way.
    assert_eq!(
        styled.to_job(vec![1], Vec::new()),
        ok(base()).to_job(vec![1], Vec::new())
    );
    assert!(err(with("style", json!({"a": 1}))).fields().eq(["style"]));
    assert!(err(with("style", json!("x".repeat(MAX_STYLE_CHARS + 1))))
        .fields()
        .eq(["style"]));
}
