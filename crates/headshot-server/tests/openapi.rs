//! The OpenAPI document: committed (openapi.json beside Cargo.toml) and equal to what the
//! code generates, covering every route the router serves, structurally valid OpenAPI 3.1,
//! and served with its offline docs page.
//!
//! Regenerate after changing a route or a wire type:
//! `HEADSHOT_BLESS=1 cargo test -p headshot-server --test openapi`

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use headshot_server::routes::openapi::{aliases, document_json, DOCS_PATH, OPENAPI_PATH};
use headshot_server::routes::{
    admin, CANCEL_PATHS, CLEAR_QUEUE_PATH, FETCH_BODY_PATH, FETCH_ID_PATHS, SUBMIT_PATHS,
};
use serde_json::Value;

fn committed_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

fn generated() -> Value {
    serde_json::from_str(&document_json()).unwrap()
}

#[test]
fn committed_document_matches_the_code() {
    let text = document_json();
    let path = committed_path();
    if std::env::var("HEADSHOT_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} differs from the document the code generates; regenerate it with\n  \
         HEADSHOT_BLESS=1 cargo test -p headshot-server --test openapi\nand commit it.",
        path.display()
    );
}

/// Every path and method the router answers, from the route constants.
fn served_operations() -> Vec<(String, &'static str)> {
    let mut ops = Vec::new();
    for path in SUBMIT_PATHS {
        ops.push((path.to_string(), "post"));
    }
    for path in FETCH_ID_PATHS {
        ops.push((path.to_string(), "post"));
        ops.push((path.to_string(), "get"));
    }
    ops.push((FETCH_BODY_PATH.to_string(), "post"));
    ops.push((FETCH_BODY_PATH.to_string(), "get"));
    for path in CANCEL_PATHS {
        ops.push((path.to_string(), "post"));
    }
    for path in [
        CLEAR_QUEUE_PATH,
        admin::SYSTEM_DETAILS_PATH,
        admin::CLEAR_CACHE_PATH,
        admin::RESTART_SERVER_PATH,
        admin::UPDATE_PATH,
    ] {
        ops.push((path.to_string(), "post"));
    }
    for path in [
        "/outputs/{file}",
        "/health",
        "/health/ready",
        "/health/live",
        "/metrics",
        OPENAPI_PATH,
        DOCS_PATH,
        "/",
    ] {
        ops.push((path.to_string(), "get"));
    }
    ops
}

#[test]
fn every_served_route_is_documented() {
    let doc = generated();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in served_operations() {
        let op = &paths
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is not in the document"))[method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path}: no 200 answer"
        );
    }
    // And nothing documented that is not served.
    let served: BTreeSet<String> = served_operations().into_iter().map(|(p, _)| p).collect();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented, served);
    // Aliases describe the same operation as the path they alias.
    for (alias, documented) in aliases() {
        assert_eq!(
            paths[alias]["post"]["requestBody"], paths[documented]["post"]["requestBody"],
            "{alias}"
        );
    }
}

#[tokio::test]
async fn every_served_route_answers_as_documented() {
    // The constants above are the router's: each documented operation is really routed
    // (an unrouted path would get the JSON 404, an unrouted method a 405).
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for (path, method) in served_operations() {
        let url = server.url(&path.replace("{id}", "1").replace("{file}", "x.png"));
        let request = match method {
            "get" => client().get(url),
            _ => client().post(url).body("{}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(
            status != 405 && (status != 404 || path.starts_with("/outputs")),
            "{method} {path}: {status}"
        );
    }
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn document_is_structurally_openapi_3_1() {
    let doc = generated();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
    // Operation ids are unique, and every path template parameter is declared.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "operationId {id} twice");
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
                });
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
        }
    }
}

#[test]
fn request_body_describes_every_field_of_the_wire() {
    let doc = generated();
    let body = &doc["components"]["schemas"]["HeadShotBody"];
    let props = body["properties"].as_object().unwrap();
    // The documented example's fields, the SDK's (`style`), the aliases and `type`.
    let example: Value = serde_json::from_str(&headshot_test_support::wire::documented_example(
        "http://x/f.png",
    ))
    .unwrap();
    let mut fields: Vec<String> = example.as_object().unwrap().keys().cloned().collect();
    fields.extend(
        [
            "image",
            "s_scale",
            "safety_checker_type",
            "type",
            "style",
            "face_index",
            "candidates",
        ]
        .map(String::from),
    );
    for field in fields {
        assert!(props.contains_key(&field), "{field} is not described");
    }
    assert_eq!(body["required"], serde_json::json!(["prompt"]));
    // Loose typing: width takes "512" as well as 512.
    let width = doc
        .pointer("/components/schemas/LooseInteger/oneOf")
        .unwrap();
    let types: Vec<&Value> = width
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["type"])
        .collect();
    assert!(types.contains(&&Value::from("integer")) && types.contains(&&Value::from("string")));
}

#[tokio::test]
async fn document_and_offline_docs_page_are_served() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let response = client().get(server.url(OPENAPI_PATH)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, generated());

    let response = client().get(server.url(DOCS_PATH)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains(OPENAPI_PATH));
    // Nothing loaded from elsewhere: no absolute URLs at all (air-gapped users).
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("src=\"//"),
        "the docs page must not load anything from outside the server"
    );
}
