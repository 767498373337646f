//! What this server can render of a request's `model_id`, `lora_model`, `scheduler`,
//! `use_karras_sigmas` and `clip_skip`. It serves one model set with its own scheduler, so any
//! other choice is refused at submit with the field named, instead of being ignored: a client
//! asking for a sampler or LoRA must never get images made without it.

use headshot_core::wire::ValidationErrors;
use headshot_core::{ModelChoice, SchedulerName};

pub fn check_served(choice: &ModelChoice) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    if let Some(id) = &choice.model_id {
        errors.add(
            "model_id",
            format!("The model id {id} is not configured on this server; leave model_id out to use its model set."),
        );
    }
    if let Some(lora) = choice.loras.first() {
        errors.add(
            "lora_model",
            format!(
                "The lora model {} is not available: this server has no LoRA folder.",
                lora.name
            ),
        );
    }
    match choice.scheduler {
        None | Some(SchedulerName::Ddim) => {}
        Some(other) => errors.add(
            "scheduler",
            format!(
                "The scheduler {other} is not available on this server yet; use DDIMScheduler."
            ),
        ),
    }
    if choice.karras_sigmas == Some(true) {
        errors.add(
            "use_karras_sigmas",
            "The use karras sigmas option is not available with DDIMScheduler.",
        );
    }
    if choice.clip_skip > 1 {
        errors.add(
            "clip_skip",
            "The clip skip 2 is not available on this server yet; use 1.",
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use headshot_core::LoraChoice;

    use super::*;

    #[test]
    fn defaults_pass_and_every_other_choice_is_named() {
        assert!(check_served(&ModelChoice::default()).is_ok());
        let ddim = ModelChoice {
            scheduler: Some(SchedulerName::Ddim),
            karras_sigmas: Some(false),
            ..ModelChoice::default()
        };
        assert!(check_served(&ddim).is_ok());
        let all = ModelChoice {
            model_id: Some("realistic".into()),
            loras: vec![LoraChoice {
                name: "film".into(),
                strength: 0.7,
            }],
            scheduler: Some(SchedulerName::EulerAncestralDiscrete),
            karras_sigmas: Some(true),
            clip_skip: 2,
        };
        let errors = check_served(&all).unwrap_err();
        let fields: Vec<&str> = errors.fields().collect();
        assert_eq!(
            fields,
            [
                "clip_skip",
                "lora_model",
                "model_id",
                "scheduler",
                "use_karras_sigmas"
            ]
        );
        for message in errors.0.values().flatten() {
            assert!(
                message.starts_with("The ") && message.ends_with('.'),
                "{message}"
            );
        }
    }
}
