//! Arbitrary JSON never panics the request parser, and whatever it accepts is within limits.

use headshot_core::wire::{FetchRequest, HeadShotRequest, TextLimits, ValidationErrorResponse};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        // Long text, for the text-field limits.
        (".{1,3}", 0usize..3000).prop_map(|(s, n)| Value::from(s.repeat(n))),
        prop_oneof![
            Just("512"),
            Just("yes"),
            Just("no"),
            Just("-1"),
            Just("1e400"),
            Just("NaN"),
            Just("data:image/png;base64,AAAA"),
            Just("http://x"),
            Just("https://"),
            Just("data:,"),
            Just("black"),
            Just("21.5"),
            Just("18446744073709551616")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 23] = [
    "key",
    "prompt",
    "negative_prompt",
    "face_image",
    "image",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "s_scale",
    "samples",
    "seed",
    "safety_checker",
    "safety_checker_type",
    "type",
    "base64",
    "webhook",
    "track_id",
    "request_id",
    "id",
    "style",
    "face_index",
    "candidates",
];

fn arb_body() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(FIELDS.to_vec()), arb_json()), 0..14).prop_map(
        |pairs| {
            let mut map = Map::new();
            for (k, v) in pairs {
                map.insert(k.to_string(), v);
            }
            Value::Object(map)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_json_is_handled(body in prop_oneof![arb_json(), arb_body()], seed in any::<u32>()) {
        let _ = FetchRequest::from_json(&body);
        if let Ok(r) = HeadShotRequest::from_json(&body, seed) {
            prop_assert!([21, 31, 41].contains(&r.num_inference_steps));
            prop_assert!(r.width % 8 == 0 && r.height % 8 == 0);
            prop_assert!(r.width.max(r.height) <= 768 && r.width.min(r.height) <= 512);
            prop_assert!((1..=2).contains(&r.samples));
            prop_assert!((0.0..=2.0).contains(&r.s_scale));
            prop_assert!((1.0..=20.0).contains(&r.guidance_scale));
            prop_assert!(!r.prompt.trim().is_empty());
            // meta always serialises.
            prop_assert!(serde_json::to_value(r.meta("p")).is_ok());
        }
    }

    #[test]
    fn valid_bodies_with_loose_numbers_are_accepted(
        w in 1i64..5000, h in 1i64..5000, steps in -100i64..200, as_string in any::<bool>()
    ) {
        let n = |x: i64| if as_string { json!(x.to_string()) } else { json!(x) };
        let body = json!({"prompt": "p", "face_image": "https://e.com/f.png",
                          "width": n(w), "height": n(h), "num_inference_steps": n(steps)});
        prop_assert!(HeadShotRequest::from_json(&body, 1).is_ok());
    }

    /// Whatever the body, the normaliser answers a request within the limits or validation
    /// errors in the documented shape: `{"status":"error","message":{field:[sentences]}}`,
    /// naming only fields a client can send.
    #[test]
    fn any_json_gets_a_documented_answer(
        body in prop_oneof![arb_json(), arb_body()],
        seed in any::<u32>(),
        max_prompt_chars in 1usize..300,
        max_url_chars in 8usize..300,
        max_track_id_bytes in 1usize..64,
    ) {
        let limits = TextLimits { max_prompt_chars, max_url_chars, max_track_id_bytes };
        match HeadShotRequest::from_json_with_limits(&body, seed, &limits) {
            Ok(r) => {
                prop_assert!(r.prompt.chars().count() <= max_prompt_chars);
                prop_assert!(r.negative_prompt.chars().count() <= max_prompt_chars);
                prop_assert!(r.webhook.as_ref().is_none_or(|w| w.chars().count() <= max_url_chars));
                let track_id_len = r.track_id.as_ref().map_or(0, |t| t.to_string().len());
                prop_assert!(track_id_len <= max_track_id_bytes);
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                let wire = serde_json::to_value(ValidationErrorResponse::new(&errors)).unwrap();
                let object = wire.as_object().unwrap();
                prop_assert_eq!(object.len(), 2);
                prop_assert_eq!(&wire["status"], "error");
                let fields = wire["message"].as_object().unwrap();
                prop_assert!(!fields.is_empty());
                for (field, messages) in fields {
                    prop_assert!(FIELDS.contains(&field.as_str()), "undocumented field {}", field);
                    let messages = messages.as_array().unwrap();
                    prop_assert!(!messages.is_empty());
                    for m in messages {
                        let m = m.as_str().unwrap();
                        prop_assert!(m.starts_with("The ") && m.ends_with('.'), "{}", m);
                    }
                }
            }
        }
    }
}
