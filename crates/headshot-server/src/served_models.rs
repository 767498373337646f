//! What this server can render of a request's `model_id`, `lora_model`, `scheduler`,
//! `use_karras_sigmas` and `clip_skip`. Every scheduler and both CLIP skips render; the model
//! sets are `--models` (named by its manifest's name, or by no `model_id`) and the
//! `--model-set`s, the LoRAs those of `--lora-dir`. Anything else is refused at submit with the
//! field named, instead of being ignored: a client asking for a model or a LoRA must never get
//! images made without it. Likewise Karras sigmas with a sampler that has none (diffusers
//! would ignore them silently).

use std::collections::BTreeSet;

use headshot_core::wire::ValidationErrors;
use headshot_core::{ModelChoice, SchedulerName};
use headshot_pipeline::LoraFolder;

/// The model sets and LoRAs requests may name, read from the configuration (an API node loads
/// no models, yet answers for the workers behind it).
#[derive(Clone, Debug, Default)]
pub struct ServedModels {
    /// The `--models` set's name; `None` if this node could not read its manifest (then only
    /// a request without `model_id` gets it).
    default_id: Option<String>,
    /// The `--model-set` ids.
    on_demand: BTreeSet<String>,
    loras: Option<LoraFolder>,
}

impl ServedModels {
    pub fn new(
        default_id: Option<String>,
        on_demand: impl IntoIterator<Item = String>,
        loras: Option<LoraFolder>,
    ) -> Self {
        ServedModels {
            default_id,
            on_demand: on_demand.into_iter().collect(),
            loras,
        }
    }

    /// From the model flags: the default set's name read from its manifest (warned about,
    /// not fatal, when unreadable: a node that loads models has failed before this), the
    /// `--model-set` ids, the LoRA folder listed.
    pub fn from_args(args: &crate::ModelArgs) -> Result<Self, headshot_pipeline::LoraFolderError> {
        let default = headshot_pipeline::ModelSet::Manifest(args.models.clone());
        let default_id = match default.name() {
            Ok(name) => Some(name),
            Err(err) => {
                tracing::warn!(models = %args.models.display(), error = %err, "cannot read the default model set's name; only requests without model_id get it");
                None
            }
        };
        let ids = args.model_sets.iter().map(|s| s.id.clone());
        Ok(ServedModels::new(default_id, ids, args.lora_folder()?))
    }

    /// The ids a request's `model_id` may name, the default set's first.
    pub fn ids(&self) -> Vec<String> {
        self.default_id
            .iter()
            .chain(&self.on_demand)
            .cloned()
            .collect()
    }

    /// The LoRA folder, if one is configured.
    pub fn loras(&self) -> Option<&LoraFolder> {
        self.loras.as_ref()
    }

    /// Checks `choice` against what is served, and names the default set by no `model_id`,
    /// so its jobs batch together whichever way the request named it.
    pub fn check(&self, choice: &mut ModelChoice) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if choice.model_id.is_some() && choice.model_id == self.default_id {
            choice.model_id = None;
        }
        if let Some(id) = choice
            .model_id
            .as_deref()
            .filter(|id| !self.on_demand.contains(*id))
        {
            errors.add("model_id", self.unknown_model_message(id));
        }
        self.check_loras(choice, &mut errors);
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

    fn unknown_model_message(&self, id: &str) -> String {
        let known: Vec<&str> = self
            .default_id
            .iter()
            .chain(&self.on_demand)
            .map(String::as_str)
            .collect();
        let leave_out = match &self.default_id {
            Some(default) => format!("leave model_id out for {default}"),
            None => "leave model_id out for the default set".to_string(),
        };
        if known.is_empty() {
            format!("The model id {id} is not configured on this server; {leave_out}.")
        } else {
            format!(
                "The model id {id} is not configured on this server; it serves {} ({leave_out}).",
                known.join(", ")
            )
        }
    }

    fn check_loras(&self, choice: &ModelChoice, errors: &mut ValidationErrors) {
        match &self.loras {
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
    }
}

#[cfg(test)]
mod tests {
    use headshot_core::LoraChoice;

    use super::*;

    fn check_served(
        choice: &ModelChoice,
        loras: Option<&LoraFolder>,
    ) -> Result<(), ValidationErrors> {
        let served = ServedModels::new(None, [], loras.cloned());
        served.check(&mut choice.clone())
    }

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
    fn model_ids_are_the_default_sets_name_or_a_configured_set() {
        let served = ServedModels::new(Some("tiny".into()), ["realistic".to_string()], None);
        let pick = |id: &str| ModelChoice {
            model_id: Some(id.to_string()),
            ..ModelChoice::default()
        };
        // The default set's name is the same as no model_id (one batch key for both).
        let mut named_default = pick("tiny");
        served.check(&mut named_default).unwrap();
        assert_eq!(named_default.model_id, None);
        let mut other = pick("realistic");
        served.check(&mut other).unwrap();
        assert_eq!(other.model_id.as_deref(), Some("realistic"));
        let errors = served.check(&mut pick("dreamy")).unwrap_err();
        assert_eq!(
            errors.0["model_id"][0],
            "The model id dreamy is not configured on this server; it serves tiny, realistic (leave model_id out for tiny)."
        );
        // Without a readable default name, the message still says how to get the default.
        let unnamed = ServedModels::new(None, [], None);
        let message = &unnamed.check(&mut pick("tiny")).unwrap_err().0["model_id"][0];
        assert_eq!(
            message,
            "The model id tiny is not configured on this server; leave model_id out for the default set."
        );
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
