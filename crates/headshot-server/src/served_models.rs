//! What this server can render of a request's `model_id`, `lora_model`, `scheduler`,
//! `use_karras_sigmas` and `clip_skip`. Every scheduler and both CLIP skips render; it serves
//! one model set and the LoRAs of its `--lora-dir`, so other model ids and LoRAs are refused at
//! submit with the field named, instead of being ignored: a client asking for a LoRA must never
//! get images made without it. Likewise Karras sigmas with a sampler that has none (diffusers
//! would ignore them silently).

use headshot_core::wire::ValidationErrors;
use headshot_core::{ModelChoice, SchedulerName};
use headshot_pipeline::LoraFolder;

pub fn check_served(
    choice: &ModelChoice,
    loras: Option<&LoraFolder>,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    if let Some(id) = &choice.model_id {
        errors.add(
            "model_id",
            format!("The model id {id} is not configured on this server; leave model_id out to use its model set."),
        );
    }
    match loras {
        None => {
            if let Some(lora) = choice.loras.first() {
                errors.add(
                    "lora_model",
                    format!(
                        "The lora model {} is not available: this server has no LoRA folder.",
                        lora.name
                    ),
                );
            }
        }
        Some(folder) => {
            if let Some(lora) = choice.loras.iter().find(|l| !folder.contains(&l.name)) {
                let known: Vec<&str> = folder.names().collect();
                errors.add(
                    "lora_model",
                    format!(
                        "The lora model {} is not in this server's LoRA folder {} (it has: {}).",
                        lora.name,
                        folder.dir().display(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    }
    if choice.karras_sigmas == Some(true) {
        let scheduler = choice.scheduler.unwrap_or(SchedulerName::Ddim);
        if !scheduler.has_karras_sigmas() {
            errors.add(
                "use_karras_sigmas",
                format!(
                    "The use karras sigmas option is not available with {scheduler}; use one of {}.",
                    SchedulerName::karras_names()
                ),
            );
        }
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
    fn every_scheduler_and_clip_skip_pass_other_models_and_loras_are_named() {
        assert!(check_served(&ModelChoice::default(), None).is_ok());
        for scheduler in SchedulerName::ALL {
            for karras in [None, Some(false), Some(true)] {
                let choice = ModelChoice {
                    scheduler: Some(scheduler),
                    karras_sigmas: karras,
                    clip_skip: 2,
                    ..ModelChoice::default()
                };
                let served = check_served(&choice, None);
                let refused = karras == Some(true) && !scheduler.has_karras_sigmas();
                assert_eq!(served.is_err(), refused, "{scheduler} {karras:?}");
            }
        }
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
        let errors = check_served(&all, None).unwrap_err();
        let fields: Vec<&str> = errors.fields().collect();
        assert_eq!(fields, ["lora_model", "model_id", "use_karras_sigmas"]);
        for message in errors.0.values().flatten() {
            assert!(
                message.starts_with("The ") && message.ends_with('.'),
                "{message}"
            );
        }
        // No scheduler named is DDIM, which has no Karras sigmas either.
        let default_karras = ModelChoice {
            karras_sigmas: Some(true),
            ..ModelChoice::default()
        };
        let message = check_served(&default_karras, None).unwrap_err().to_string();
        assert!(message.contains("DDIMScheduler"), "{message}");
    }

    #[test]
    fn loras_of_the_folder_pass_and_others_are_named_with_the_folder() {
        let dir = std::env::temp_dir().join(format!("served-loras-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("film.safetensors"), b"").unwrap();
        let folder = LoraFolder::scan(&dir).unwrap();
        let with = |names: &[&str]| ModelChoice {
            loras: names
                .iter()
                .map(|n| LoraChoice {
                    name: n.to_string(),
                    strength: 0.7,
                })
                .collect(),
            ..ModelChoice::default()
        };
        assert!(check_served(&with(&["film"]), Some(&folder)).is_ok());
        let errors = check_served(&with(&["film", "grain"]), Some(&folder)).unwrap_err();
        let message = &errors.0["lora_model"][0];
        assert!(
            message.starts_with("The lora model grain is not in this server's LoRA folder "),
            "{message}"
        );
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(message.ends_with("(it has: film)."), "{message}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
