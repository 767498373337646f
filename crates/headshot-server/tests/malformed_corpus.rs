//! The malformed-input corpus against the real binary (tiny model set): every case's HTTP
//! status and documented error shape, the process alive after each, and a good job (rotating
//! through the loose spellings real clients use) succeeding after every 25 cases.

mod real_binary;

use std::process::Command;

use base64::Engine as _;
use real_binary::*;
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "corpus-key";
const TEST: &str = "malformed_corpus";
const SUBMIT: &str = "/api/v6/image_editing/head_shot";
/// Small, so that over-long bodies are cheap to send: max body = 4/3 of it + 1 MiB.
const MAX_IMAGE_BYTES: usize = 200_000;

#[derive(Clone, Debug)]
enum Expect {
    /// 200 `{"status":"error","message":{field:[...]}}` naming exactly these fields.
    Validation(Vec<&'static str>),
    /// This status with `{"status":"error","message":"..."}`.
    Error(u16),
    /// 200 `{"status":"error","message":"Invalid Api Key","tip":...}`.
    InvalidKey,
    /// 200 `{"status":"failed","id":"","message":"Request not found","output":""}`.
    NotFound,
    /// 200 `{"status":"failed","id":<n>,"message":...,"output":""}`: a job that ran and failed.
    Failed,
}

struct Case {
    name: String,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expect: Expect,
}

fn post(name: impl Into<String>, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        method: Method::POST,
        path: SUBMIT.into(),
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        expect,
    }
}

fn json_case(name: impl Into<String>, body: &Value, expect: Expect) -> Case {
    post(name, body.to_string(), expect)
}

struct Faces {
    data_uri: String,
    url_base: String,
}

fn base(faces: &Faces) -> Value {
    json!({"key": KEY, "prompt": "a portrait", "face_image": faces.data_uri})
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    body.as_object_mut().unwrap().remove(field);
    body
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, 90])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn corpus(faces: &Faces, photo: &[u8]) -> Vec<Case> {
    use Expect::*;
    let mut cases = Vec::new();

    // Bodies that are not JSON: 400 in the error shape.
    let not_json: Vec<(&str, Vec<u8>)> = vec![
        ("open brace", b"{".to_vec()),
        ("close brace", b"}".to_vec()),
        ("unterminated key", b"{\"a\"".to_vec()),
        ("missing value", b"{\"a\":}".to_vec()),
        ("lone comma", b"{,}".to_vec()),
        ("single quotes", b"{'key':'x'}".to_vec()),
        ("trailing comma", br#"{"key":"k",}"#.to_vec()),
        ("array trailing comma", b"[1,]".to_vec()),
        ("truncated null", b"nul".to_vec()),
        ("truncated true", b"tru".to_vec()),
        ("NaN literal", br#"{"a":NaN}"#.to_vec()),
        ("Infinity literal", br#"{"a":Infinity}"#.to_vec()),
        ("number out of range", br#"{"a":1e400}"#.to_vec()),
        ("lone surrogate", br#"{"a":"\ud800"}"#.to_vec()),
        ("bad escape", br#"{"a":"\q"}"#.to_vec()),
        ("two objects", b"{} {}".to_vec()),
        ("trailing garbage", br#"{"a":1}x"#.to_vec()),
        (
            "deep arrays",
            format!("{}{}", "[".repeat(300), "]".repeat(300)).into_bytes(),
        ),
        (
            "deep objects",
            format!("{}1{}", "{\"a\":".repeat(300), "}".repeat(300)).into_bytes(),
        ),
        ("invalid UTF-8", b"{\"prompt\":\"\xff\xfe\"}".to_vec()),
        ("UTF-16 BOM", b"\xff\xfe{\x00}\x00".to_vec()),
        ("two UTF-8 BOMs", b"\xef\xbb\xbf\xef\xbb\xbf{}".to_vec()),
        ("NUL bytes", vec![0u8; 64]),
        (
            "random binary",
            (0..512u32).map(|i| (i * 97 % 251) as u8).collect(),
        ),
        ("plain text", b"hello".to_vec()),
        ("form encoded", b"key=corpus-key&prompt=x".to_vec()),
        ("XML", b"<request><prompt>x</prompt></request>".to_vec()),
        ("hex number", b"0x10".to_vec()),
        ("unquoted key", b"{key: 1}".to_vec()),
        (
            "control char in string",
            b"{\"prompt\":\"a\x01b\"}".to_vec(),
        ),
    ];
    for (name, body) in not_json {
        cases.push(post(format!("not JSON: {name}"), body, Error(400)));
    }

    // JSON that is not an object: 400, saying so.
    for raw in [
        "[]", "null", "1", "-0.5", "\"text\"", "true", "false", "[{}]",
    ] {
        cases.push(post(format!("not an object: {raw}"), raw, Error(400)));
    }
    cases.push(json_case(
        "not an object: the request in an array",
        &json!([base(faces)]),
        Error(400),
    ));

    // Keys: refused before anything else is looked at.
    for (name, key) in [
        ("wrong", json!("nope")),
        ("prefix", json!("corpus")),
        ("longer", json!("corpus-key-2")),
        ("case", json!("CORPUS-KEY")),
        ("null", json!(null)),
        ("empty", json!("")),
        ("array", json!([KEY])),
        ("object", json!({"key": KEY})),
        ("number", json!(12345)),
        ("bool", json!(true)),
    ] {
        cases.push(json_case(
            format!("key {name}"),
            &with(base(faces), "key", key),
            InvalidKey,
        ));
    }
    cases.push(json_case(
        "no key at all",
        &without(base(faces), "key"),
        InvalidKey,
    ));
    cases.push(json_case(
        "wrong key with invalid fields",
        &with(
            with(base(faces), "key", json!("nope")),
            "width",
            json!("abc"),
        ),
        InvalidKey,
    ));
    for (name, header, value) in [
        ("wrong key header", "key", "nope".to_string()),
        ("wrong bearer", "authorization", "Bearer nope".to_string()),
        ("bearer without key", "authorization", "Bearer".to_string()),
        (
            "basic scheme",
            "authorization",
            format!("Basic {}", b64(KEY.as_bytes())),
        ),
        ("key as a scheme", "authorization", KEY.to_string()),
    ] {
        let mut case = json_case(
            format!("header: {name}"),
            &with(base(faces), "key", json!("")),
            InvalidKey,
        );
        case.headers.push((header, value));
        cases.push(case);
    }
    // A wrong header key is refused even when the body key is right (checked first).
    let mut case = json_case("wrong header key, right body key", &base(faces), InvalidKey);
    case.headers.push(("key", "nope".into()));
    cases.push(case);

    // Required fields.
    cases.push(json_case(
        "empty object",
        &json!({"key": KEY}),
        Validation(vec!["face_image", "prompt"]),
    ));
    cases.push(post("empty body", "", InvalidKey));
    cases.push(json_case(
        "no prompt",
        &without(base(faces), "prompt"),
        Validation(vec!["prompt"]),
    ));
    cases.push(json_case(
        "no face image",
        &without(base(faces), "face_image"),
        Validation(vec!["face_image"]),
    ));
    for (name, value) in [
        ("null", json!(null)),
        ("empty", json!("")),
        ("blank", json!("   ")),
    ] {
        cases.push(json_case(
            format!("prompt {name}"),
            &with(base(faces), "prompt", value.clone()),
            Validation(vec!["prompt"]),
        ));
        cases.push(json_case(
            format!("face image {name}"),
            &with(base(faces), "face_image", value),
            Validation(vec!["face_image"]),
        ));
    }

    // Wrong types and values, field by field.
    let bad_values: Vec<(&'static str, Vec<Value>)> = vec![
        (
            "prompt",
            vec![
                json!([]),
                json!({}),
                json!(["a"]),
                json!(true),
                json!({"text": "x"}),
            ],
        ),
        (
            "negative_prompt",
            vec![json!([]), json!({}), json!(false), json!(["no"])],
        ),
        (
            "face_image",
            vec![
                json!(5),
                json!(true),
                json!({}),
                json!({"url": "x"}),
                json!(["x"]),
                json!(1.5),
            ],
        ),
        (
            "width",
            vec![
                json!("abc"),
                json!(5.5),
                json!("5.5"),
                json!([]),
                json!({}),
                json!(true),
                json!("512px"),
                json!("NaN"),
            ],
        ),
        (
            "height",
            vec![
                json!("abc"),
                json!(0.5),
                json!([512]),
                json!({}),
                json!(false),
                json!("1e3.5"),
            ],
        ),
        (
            "num_inference_steps",
            vec![json!("x"), json!(20.5), json!([21]), json!({}), json!(true)],
        ),
        (
            "samples",
            vec![json!("two"), json!(1.5), json!([]), json!({}), json!(true)],
        ),
        (
            "guidance_scale",
            vec![
                json!("abc"),
                json!("NaN"),
                json!("inf"),
                json!("-inf"),
                json!([]),
                json!({}),
                json!(true),
            ],
        ),
        (
            "s_scale",
            vec![json!("x"), json!("NaN"), json!([]), json!({}), json!(false)],
        ),
        (
            "seed",
            vec![
                json!("abc"),
                json!(1.5),
                json!("1.5"),
                json!([]),
                json!({}),
                json!(true),
                json!("18446744073709551616"),
            ],
        ),
        (
            "safety_checker",
            vec![
                json!("maybe"),
                json!(2),
                json!(-1),
                json!([]),
                json!({}),
                json!(0.5),
            ],
        ),
        (
            "base64",
            vec![json!("maybe"), json!(3), json!([]), json!({}), json!("ja")],
        ),
        (
            "safety_checker_type",
            vec![
                json!("green"),
                json!(5),
                json!([]),
                json!({}),
                json!(true),
                json!("BLURRY"),
            ],
        ),
        (
            "webhook",
            vec![
                json!("ftp://example.com/hook"),
                json!("not a url"),
                json!(5),
                json!("http://"),
                json!([]),
                json!({}),
                json!(true),
                json!("javascript:alert(1)"),
                json!("http://exa mple.com/"),
            ],
        ),
    ];
    for (field, values) in bad_values {
        for value in values {
            cases.push(json_case(
                format!("{field} = {value}"),
                &with(base(faces), field, value),
                Validation(vec![field]),
            ));
        }
    }
    cases.push(json_case(
        "several bad fields at once",
        &with(
            with(with(base(faces), "width", json!("x")), "seed", json!("y")),
            "base64",
            json!("z"),
        ),
        Validation(vec!["base64", "seed", "width"]),
    ));

    // Text limits (defaults).
    let limit_cases: Vec<(&str, &'static str, Value)> = vec![
        ("prompt 2001 chars", "prompt", json!("p".repeat(2001))),
        ("prompt 10 MB", "prompt", json!("p".repeat(1_000_000))),
        (
            "multi-byte prompt 2001 chars",
            "prompt",
            json!("é".repeat(2001)),
        ),
        (
            "negative prompt 2001 chars",
            "negative_prompt",
            json!("n".repeat(2001)),
        ),
        ("track id 1025 bytes", "track_id", json!("t".repeat(1030))),
        (
            "track id big object",
            "track_id",
            json!({"a": "t".repeat(2000)}),
        ),
        ("track id big array", "track_id", json!(vec![1; 600])),
        (
            "webhook 2049 chars",
            "webhook",
            json!(format!("https://example.com/{}", "w".repeat(2040))),
        ),
        (
            "face URL 2049 chars",
            "face_image",
            json!(format!("https://example.com/{}", "f".repeat(2040))),
        ),
        (
            "webhook host of 300 chars",
            "webhook",
            json!(format!("https://{}.com/hook", "h".repeat(300))),
        ),
    ];
    for (name, field, value) in limit_cases {
        cases.push(json_case(
            name,
            &with(base(faces), field, value),
            Validation(vec![field]),
        ));
    }

    // Face images that are not usable: refused before admission.
    let truncated_png = png(96, 96)[..40].to_vec();
    let bad_faces: Vec<(&str, String)> = vec![
        ("not base64", "%%%not base64%%%".into()),
        ("data URI without comma", "data:image/png;base64".into()),
        ("data URI not base64", "data:image/png,abc".into()),
        ("data URI bad base64", "data:image/png;base64,!!!!".into()),
        ("data URI empty", "data:image/png;base64,".into()),
        ("base64 of text", b64(b"this is not an image at all")),
        ("base64 of JSON", b64(br#"{"image": true}"#)),
        ("base64 of zeros", b64(&[0u8; 300])),
        (
            "data URI of text",
            format!("data:image/jpeg;base64,{}", b64(b"hello there")),
        ),
        (
            "truncated PNG header",
            format!("data:image/png;base64,{}", b64(&truncated_png)),
        ),
        ("PNG over the side limit", b64(&png(12_001, 1))),
        ("PNG too tall", b64(&png(1, 12_001))),
        (
            "over the byte limit",
            b64(&vec![0xffu8; MAX_IMAGE_BYTES + 10]),
        ),
        ("URL not found", format!("{}/missing.png", faces.url_base)),
        ("URL not an image", format!("{}/text", faces.url_base)),
        ("URL redirect loop", format!("{}/loop", faces.url_base)),
        (
            "URL with credentials",
            faces.url_base.replace("http://", "http://user:pw@"),
        ),
        (
            "URL with user only",
            faces.url_base.replace("http://", "http://user@"),
        ),
        ("URL closed port", "http://127.0.0.1:9/face.jpg".into()),
        (
            "URL unknown scheme-like",
            "gopher://example.com/face.jpg".into(),
        ),
        ("URL without host", "http:///face.jpg".into()),
    ];
    for (name, face) in bad_faces {
        cases.push(json_case(
            format!("face: {name}"),
            &with(base(faces), "face_image", json!(face)),
            Validation(vec!["face_image"]),
        ));
    }

    // Readable headers, unusable images: the job runs and fails in the documented shape.
    cases.push(json_case(
        "failed: truncated JPEG",
        &with(
            base(faces),
            "face_image",
            json!(b64(&photo[..photo.len() / 2])),
        ),
        Failed,
    ));
    cases.push(json_case(
        "failed: no face in the photo",
        &with(base(faces), "face_image", json!(b64(&png(96, 96)))),
        Failed,
    ));

    // Bodies over the limit: 413.
    let huge = format!(
        "{{\"key\":\"{KEY}\",\"face_image\":\"{}\"}}",
        "A".repeat(2 * 1024 * 1024)
    );
    cases.push(post("body over the limit", huge, Error(413)));
    cases.push(post(
        "body over the limit, not JSON",
        vec![b' '; 2 * 1024 * 1024],
        Error(413),
    ));

    // Wrong methods and paths.
    for path in [
        SUBMIT,
        "/api/v1/image_editing/head_shot",
        "/api/v1/enterprise/image_editing/head_shot",
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
            cases.push(Case {
                name: format!("{method} {path}"),
                method,
                path: path.into(),
                headers: vec![],
                body: vec![],
                expect: Error(405),
            });
        }
    }
    // `/` is the playground page (GET only): another method gets the JSON 405.
    cases.push(Case {
        name: "POST /".into(),
        method: Method::POST,
        path: "/".into(),
        headers: vec![],
        body: vec![],
        expect: Error(405),
    });
    for path in [
        "/index.html",
        "/api",
        "/api/v6/image_editing",
        "/api/v6/image_editing/head_shot/extra",
        "/api/v7/image_editing/head_shot",
        "/API/V6/IMAGE_EDITING/HEAD_SHOT",
        "/outputs/",
        "/outputs/..%2Fjobs.redb",
        "/outputs/../jobs.redb",
        "/outputs/00000000-0000-0000-0000-000000000000-0.png",
        "/outputs/x.png",
        "/outputs/%00",
    ] {
        cases.push(Case {
            name: format!("GET {path}"),
            method: Method::GET,
            path: path.into(),
            headers: vec![],
            body: vec![],
            expect: Error(404),
        });
    }

    // Fetches.
    let fetch = |name: &str, path: &str, body: Value, expect: Expect| {
        let mut case = json_case(name, &body, expect);
        case.path = path.into();
        case
    };
    for id in [
        "abc",
        "-1",
        "0",
        "99999999",
        "18446744073709551616",
        "1.5",
        "%20",
    ] {
        cases.push(fetch(
            &format!("fetch id {id}"),
            &format!("/api/v6/image_editing/fetch/{id}"),
            json!({"key": KEY}),
            NotFound,
        ));
    }
    for request_id in [
        json!("x"),
        json!(null),
        json!([]),
        json!({}),
        json!(-5),
        json!(424242),
    ] {
        cases.push(fetch(
            &format!("fetch request_id {request_id}"),
            "/api/v6/images/fetch",
            json!({"key": KEY, "request_id": request_id}),
            NotFound,
        ));
    }
    cases.push(fetch(
        "fetch with a wrong key",
        "/api/v6/image_editing/fetch/1",
        json!({"key": "nope"}),
        InvalidKey,
    ));
    cases.push(fetch(
        "fetch without a key",
        "/api/v3/fetch/1",
        json!({}),
        InvalidKey,
    ));
    for raw in ["[]", "{", "null", "\"x\""] {
        let mut case = post(format!("fetch body {raw}"), raw, Error(400));
        case.path = "/api/v6/images/fetch".into();
        cases.push(case);
    }
    cases.push(Case {
        name: "GET fetch with a wrong key".into(),
        method: Method::GET,
        path: "/api/v6/images/fetch?key=nope&request_id=1".into(),
        headers: vec![],
        body: vec![],
        expect: InvalidKey,
    });
    cases
}

/// Good jobs in the spellings real clients use; one runs after every 25 cases.
/// A good request: what it shows, extra headers, the body.
type GoodJob = (String, Vec<(&'static str, String)>, Vec<u8>);

fn good_jobs(faces: &Faces, photo: &[u8]) -> Vec<GoodJob> {
    let job = small_job(KEY, &faces.data_uri);
    let mut loose = job.clone();
    for (field, value) in [
        ("width", "64"),
        ("height", "64"),
        ("num_inference_steps", "21"),
        ("samples", "1"),
        ("seed", "7"),
    ] {
        loose[field] = json!(value);
    }
    loose["safety_checker"] = json!("no");
    loose["base64"] = json!("no");
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(job.to_string().as_bytes());
    let json = |v: &Value| v.to_string().into_bytes();
    vec![
        ("plain".into(), vec![], json(&job)),
        (
            "numbers and booleans as strings".into(),
            vec![],
            json(&loose),
        ),
        ("UTF-8 BOM".into(), vec![], bom),
        (
            "lower-case bearer".into(),
            vec![("authorization", format!("bearer {KEY}"))],
            json(&with(job.clone(), "key", json!(""))),
        ),
        (
            "key header".into(),
            vec![("key", KEY.to_string())],
            json(&without(job.clone(), "key")),
        ),
        (
            "raw base64".into(),
            vec![],
            json(&with(job.clone(), "face_image", json!(b64(photo)))),
        ),
        (
            "face URL".into(),
            vec![],
            json(&with(
                job.clone(),
                "face_image",
                json!(format!("{}/face.jpg", faces.url_base)),
            )),
        ),
        (
            "image alias, nulls".into(),
            vec![],
            json(&with(
                with(
                    with(
                        without(job.clone(), "face_image"),
                        "image",
                        json!(faces.data_uri),
                    ),
                    "webhook",
                    json!(null),
                ),
                "track_id",
                json!(null),
            )),
        ),
        (
            "unknown fields".into(),
            vec![],
            json(&with(
                with(job.clone(), "style", json!("x")),
                "enhance_prompt",
                json!("yes"),
            )),
        ),
        (
            "base64 output".into(),
            vec![],
            json(&with(job, "base64", json!(true))),
        ),
    ]
}

async fn check(client: &reqwest::Client, base_url: &str, case: &Case) {
    let mut request = client.request(case.method.clone(), format!("{base_url}{}", case.path));
    for (name, value) in &case.headers {
        request = request.header(*name, value);
    }
    let response = request
        .body(case.body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text}", case.name));
    let keys = |v: &Value| {
        let mut k: Vec<String> = v
            .as_object()
            .unwrap_or_else(|| panic!("{}: not an object: {v}", case.name))
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let name = &case.name;
    match &case.expect {
        Expect::Validation(fields) => {
            assert_eq!(status, 200, "{name}: {v}");
            assert_eq!(keys(&v), ["message", "status"], "{name}: {v}");
            assert_eq!(v["status"], "error", "{name}: {v}");
            assert_eq!(keys(&v["message"]), *fields, "{name}: {v}");
            for field in fields.iter() {
                let messages = v["message"][field].as_array().unwrap();
                assert!(
                    !messages.is_empty()
                        && messages
                            .iter()
                            .all(|m| m.as_str().is_some_and(|m| !m.is_empty())),
                    "{name}: {v}"
                );
            }
        }
        Expect::Error(code) => {
            assert_eq!(status, *code, "{name}: {v}");
            assert_eq!(keys(&v), ["message", "status"], "{name}: {v}");
            assert_eq!(v["status"], "error", "{name}: {v}");
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: {v}"
            );
        }
        Expect::InvalidKey => {
            assert_eq!(status, 200, "{name}: {v}");
            assert_eq!(keys(&v), ["message", "status", "tip"], "{name}: {v}");
            assert_eq!(v["message"], "Invalid Api Key", "{name}: {v}");
        }
        Expect::NotFound => {
            assert_eq!(status, 200, "{name}: {v}");
            assert_eq!(
                v,
                json!({"status": "failed", "id": "", "message": "Request not found", "output": ""}),
                "{name}"
            );
        }
        Expect::Failed => {
            assert_eq!(status, 200, "{name}: {v}");
            assert_eq!(
                keys(&v),
                ["id", "message", "output", "status"],
                "{name}: {v}"
            );
            assert_eq!(v["status"], "failed", "{name}: {v}");
            assert!(v["id"].is_u64(), "{name}: {v}");
            let message = v["message"].as_str().unwrap();
            assert!(
                message.matches("could not be read").count() <= 1,
                "{name}: repeats itself: {message}"
            );
        }
    }
}

#[test]
fn malformed_corpus() {
    if std::env::var("HEADSHOT_SKIP_E2E").is_ok_and(|v| v == "1") {
        return skip_or_fail(TEST, "HEADSHOT_SKIP_E2E=1");
    }
    let root = repo_root();
    let assets = test_assets();
    let photo = std::fs::read(assets.join("yaoming.jpg")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hosts = runtime.block_on(start_hosts(photo.clone()));
    let faces = Faces {
        data_uri: format!("data:image/jpeg;base64,{}", b64(&photo)),
        url_base: format!("http://{hosts}"),
    };

    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(server_binary());
    // Hundreds of refusals: keep the log to warnings.
    command.env("RUST_LOG", "warn");
    command
        .args(tiny_server_args(&root, &assets, port, KEY, data.path()))
        .args([
            "--allow-private-urls",
            "--sync-wait-secs",
            "300",
            "--max-redirects",
            "3",
        ])
        .args(["--max-image-bytes", &MAX_IMAGE_BYTES.to_string()]);
    let mut server = Running::spawn(command, &assets);
    server.wait_healthy(&base_url);

    let cases = corpus(&faces, &photo);
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let good = good_jobs(&faces, &photo);
    // A connection per request: a refused upload leaves its connection unusable.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    runtime.block_on(async {
        for (i, case) in cases.iter().enumerate() {
            check(&client, &base_url, case).await;
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "the server died on {}",
                case.name
            );
            if (i + 1) % 25 == 0 || i + 1 == cases.len() {
                let (name, headers, body) = &good[(i / 25) % good.len()];
                let mut request = client
                    .post(format!("{base_url}{SUBMIT}"))
                    .header("content-type", "application/json");
                for (header, value) in headers {
                    request = request.header(*header, value);
                }
                let v: Value = request
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    v["status"],
                    "success",
                    "good job '{name}' after case {}: {v}",
                    i + 1
                );
                let output = v["output"][0].as_str().unwrap();
                let file = client.get(output).send().await.unwrap();
                assert_eq!(file.status(), 200, "good job '{name}': {output}");
            }
        }
    });
    eprintln!("{} malformed cases answered as documented", cases.len());
}

/// The face host: `/face.jpg`, a 404, a text file and a redirect loop.
async fn start_hosts(photo: Vec<u8>) -> std::net::SocketAddr {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let router = axum::Router::new()
        .route("/face.jpg", get(move || async move { photo.clone() }))
        .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }))
        .route("/text", get(|| async { "not an image" }))
        .route(
            "/loop",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}
