//! `model_id`, `lora_model`, `lora_strength`, `scheduler`, `use_karras_sigmas` and `clip_skip`,
//! read as ModelsLab's other v6 image endpoints read them. Whether a named model set or LoRA
//! exists is the server's to say (it knows its configuration); the shapes are checked here.

use serde_json::{Map, Value};

use super::loose::{as_bool, as_f64, as_integer, as_text, present};
use super::request::ValidationErrors;
use crate::model_choice::{LoraChoice, ModelChoice, SchedulerName};

/// The most LoRAs one request may stack.
pub const MAX_LORAS: usize = 5;
/// Longest model id or LoRA name, in characters.
pub const MAX_MODEL_NAME_CHARS: usize = 100;
/// `lora_strength` outside this range is refused (negative strengths are a known technique).
pub const LORA_STRENGTH_RANGE: (f64, f64) = (-2.0, 2.0);
/// diffusers' `scale` default.
pub const DEFAULT_LORA_STRENGTH: f64 = 1.0;

/// Names are file stems and ids: letters, digits, `.`, `_`, `-`, no path separators.
pub fn is_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_MODEL_NAME_CHARS
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) fn parse_model_choice(
    fields: &Map<String, Value>,
    errors: &mut ValidationErrors,
) -> ModelChoice {
    let get = |name: &str| present(fields.get(name));
    let mut choice = ModelChoice::default();

    if let Some(v) = get("model_id") {
        match as_text(v) {
            Ok(id) if is_model_name(id.trim()) => choice.model_id = Some(id.trim().to_string()),
            _ => errors.add(
                "model_id",
                format!("The model id must be a name of at most {MAX_MODEL_NAME_CHARS} letters, digits, dots, dashes or underscores."),
            ),
        }
    }

    let names = match get("lora_model").map(as_text) {
        None => Vec::new(),
        Some(Ok(list)) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
            if names.iter().any(|n| !is_model_name(n)) {
                errors.add(
                    "lora_model",
                    "The lora model must list LoRA names separated by commas, each of letters, digits, dots, dashes or underscores.",
                );
                Vec::new()
            } else if names.len() > MAX_LORAS {
                errors.add(
                    "lora_model",
                    format!(
                        "The lora model may list at most {MAX_LORAS} LoRAs, got {}.",
                        names.len()
                    ),
                );
                Vec::new()
            } else {
                names
            }
        }
        Some(Err(_)) => {
            errors.add("lora_model", "The lora model must be a string.");
            Vec::new()
        }
    };
    let strengths = parse_strengths(get("lora_strength"), errors);
    if let Some(strengths) = strengths {
        match (strengths.len(), names.len()) {
            (_, 0) => {}
            (1, _) => {}
            (s, n) if s == n => {}
            (s, n) => errors.add(
                "lora_strength",
                format!("The lora strength must be one value or one per LoRA ({n}), got {s}."),
            ),
        }
        choice.loras = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| LoraChoice {
                name,
                strength: *strengths
                    .get(i)
                    .or(strengths.first())
                    .unwrap_or(&DEFAULT_LORA_STRENGTH),
            })
            .collect();
    }

    if let Some(v) = get("scheduler") {
        match as_text(v).ok().map(|name| name.parse::<SchedulerName>()) {
            Some(Ok(name)) => choice.scheduler = Some(name),
            _ => errors.add(
                "scheduler",
                format!(
                    "The selected scheduler is invalid; use one of {}.",
                    SchedulerName::known_names()
                ),
            ),
        }
    }

    if let Some(v) = get("use_karras_sigmas") {
        match as_bool(v) {
            Ok(b) => choice.karras_sigmas = Some(b),
            Err(_) => errors.add(
                "use_karras_sigmas",
                "The use karras sigmas field must be true or false.",
            ),
        }
    }

    if let Some(v) = get("clip_skip") {
        match as_integer(v) {
            Ok(n @ 1..=2) => choice.clip_skip = n as u8,
            _ => errors.add("clip_skip", "The clip skip must be 1 or 2."),
        }
    }
    choice
}

/// `lora_strength`: a number, or numbers separated by commas (one per LoRA). `None` after an
/// error (already reported).
fn parse_strengths(value: Option<&Value>, errors: &mut ValidationErrors) -> Option<Vec<f64>> {
    let refuse = |errors: &mut ValidationErrors| {
        errors.add(
            "lora_strength",
            format!(
                "The lora strength must be a number from {} to {}, or such numbers separated by commas.",
                LORA_STRENGTH_RANGE.0, LORA_STRENGTH_RANGE.1
            ),
        );
        None
    };
    let in_range = |x: f64| (LORA_STRENGTH_RANGE.0..=LORA_STRENGTH_RANGE.1).contains(&x);
    let strengths = match value {
        None => return Some(vec![DEFAULT_LORA_STRENGTH]),
        Some(Value::String(list)) => list
            .split(',')
            .map(|s| s.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>(),
        Some(v) => as_f64(v).ok().map(|x| vec![x]),
    };
    match strengths {
        Some(s) if !s.is_empty() && s.iter().all(|&x| in_range(x)) => Some(s),
        _ => refuse(errors),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<ModelChoice, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let choice = parse_model_choice(body.as_object().unwrap(), &mut errors);
        if errors.is_empty() {
            Ok(choice)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn nothing_sent_is_the_default() {
        let choice = parse(json!({"model_id": null, "lora_model": "", "scheduler": null})).unwrap();
        assert!(choice.is_default());
    }

    #[test]
    fn modelslab_names_are_read() {
        let choice = parse(json!({
            "model_id": "realistic-vision-v51",
            "lora_model": "film-grain, soft_light",
            "lora_strength": "0.7,0.4",
            "scheduler": "EulerAncestralDiscreteScheduler",
            "use_karras_sigmas": "yes",
            "clip_skip": "2",
        }))
        .unwrap();
        assert_eq!(choice.model_id.as_deref(), Some("realistic-vision-v51"));
        assert_eq!(
            choice.loras,
            vec![
                LoraChoice {
                    name: "film-grain".into(),
                    strength: 0.7
                },
                LoraChoice {
                    name: "soft_light".into(),
                    strength: 0.4
                },
            ]
        );
        assert_eq!(
            choice.scheduler,
            Some(SchedulerName::EulerAncestralDiscrete)
        );
        assert_eq!(choice.karras_sigmas, Some(true));
        assert_eq!(choice.clip_skip, 2);
    }

    #[test]
    fn one_strength_applies_to_every_lora_and_none_means_one() {
        let choice = parse(json!({"lora_model": "a,b", "lora_strength": 0.5})).unwrap();
        assert!(choice.loras.iter().all(|l| l.strength == 0.5));
        let choice = parse(json!({"lora_model": "a"})).unwrap();
        assert_eq!(choice.loras[0].strength, 1.0);
    }

    #[test]
    fn bad_shapes_are_named() {
        let err = parse(json!({
            "model_id": "../etc",
            "lora_model": "a/b",
            "lora_strength": "x",
            "scheduler": "PNDMScheduler",
            "use_karras_sigmas": "maybe",
            "clip_skip": 3,
        }))
        .unwrap_err();
        let fields: Vec<&str> = err.fields().collect();
        assert_eq!(
            fields,
            [
                "clip_skip",
                "lora_model",
                "lora_strength",
                "model_id",
                "scheduler",
                "use_karras_sigmas"
            ]
        );
        assert!(err.to_string().contains("DPMSolverMultistepScheduler"));
        let err = parse(json!({"lora_model": "a,b,c", "lora_strength": "0.1,0.2"})).unwrap_err();
        assert!(err.to_string().contains("one per LoRA (3), got 2"), "{err}");
        let err = parse(json!({"lora_model": "a,b,c,d,e,f"})).unwrap_err();
        assert!(err.to_string().contains("at most 5"), "{err}");
    }
}
