//! What weights and sampler render a job, named as ModelsLab's other v6 image endpoints name
//! them: `model_id`, `lora_model` + `lora_strength`, `scheduler`, `use_karras_sigmas` and
//! `clip_skip`. Every part defaults to the server's configured model set as it is.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The choices of one job. Jobs with different choices never share a batch (see
/// [`crate::BatchKey`]), so one job's LoRA or sampler cannot leak into another's images.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelChoice {
    /// A configured model set by its id; `None` is the server's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// User LoRAs from the operator's LoRA folder, in request order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<LoraChoice>,
    /// `None`: the model set's own `scheduler_config.json` (DDIM for the FaceID sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerName>,
    /// `None`: the scheduler config's `use_karras_sigmas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub karras_sigmas: Option<bool>,
    /// A1111's CLIP skip: 1 (the last text encoder layer, the default) or 2 (the one before it).
    #[serde(
        default = "default_clip_skip",
        skip_serializing_if = "is_default_clip_skip"
    )]
    pub clip_skip: u8,
}

impl Default for ModelChoice {
    fn default() -> Self {
        ModelChoice {
            model_id: None,
            loras: Vec::new(),
            scheduler: None,
            karras_sigmas: None,
            clip_skip: default_clip_skip(),
        }
    }
}

fn default_clip_skip() -> u8 {
    1
}

fn is_default_clip_skip(clip_skip: &u8) -> bool {
    *clip_skip <= 1
}

impl ModelChoice {
    /// The model set's defaults: nothing chosen.
    pub fn is_default(&self) -> bool {
        self.model_id.is_none()
            && self.loras.is_empty()
            && self.scheduler.is_none()
            && self.karras_sigmas.is_none()
            && self.clip_skip <= 1
    }
}

/// One LoRA of a job: its name in the LoRA folder and the scale its update is applied with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraChoice {
    pub name: String,
    pub strength: f64,
}

// Strengths are finite (the wire refuses others), so comparing bit patterns is an equivalence.
impl Eq for LoraChoice {}

impl Hash for LoraChoice {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.strength.to_bits().hash(state);
    }
}

/// The samplers we implement, named by their diffusers classes (what ModelsLab's `scheduler`
/// takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerName {
    Ddim,
    DpmSolverMultistep,
    EulerDiscrete,
    EulerAncestralDiscrete,
    UniPcMultistep,
}

impl SchedulerName {
    pub const ALL: [SchedulerName; 5] = [
        SchedulerName::Ddim,
        SchedulerName::DpmSolverMultistep,
        SchedulerName::EulerDiscrete,
        SchedulerName::EulerAncestralDiscrete,
        SchedulerName::UniPcMultistep,
    ];

    /// The diffusers class name (also `_class_name` in `scheduler_config.json`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerName::Ddim => "DDIMScheduler",
            SchedulerName::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerName::EulerDiscrete => "EulerDiscreteScheduler",
            SchedulerName::EulerAncestralDiscrete => "EulerAncestralDiscreteScheduler",
            SchedulerName::UniPcMultistep => "UniPCMultistepScheduler",
        }
    }

    /// Whether diffusers' class takes `use_karras_sigmas` (DDIM and Euler ancestral do not).
    pub fn has_karras_sigmas(self) -> bool {
        matches!(
            self,
            SchedulerName::DpmSolverMultistep
                | SchedulerName::EulerDiscrete
                | SchedulerName::UniPcMultistep
        )
    }

    /// The names of the classes with Karras sigmas, comma-separated, for error messages.
    pub fn karras_names() -> String {
        Self::ALL
            .into_iter()
            .filter(|s| s.has_karras_sigmas())
            .map(SchedulerName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The known names, comma-separated, for error messages.
    pub fn known_names() -> String {
        Self::ALL.map(SchedulerName::as_str).join(", ")
    }
}

impl fmt::Display for SchedulerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of [`SchedulerName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler {0:?}; known: {known}", known = SchedulerName::known_names())]
pub struct UnknownScheduler(pub String);

impl FromStr for SchedulerName {
    type Err = UnknownScheduler;

    /// The class name, case-insensitively, with or without its `Scheduler` suffix.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let wanted = name.trim().to_ascii_lowercase();
        let wanted = wanted.strip_suffix("scheduler").unwrap_or(&wanted);
        SchedulerName::ALL
            .into_iter()
            .find(|s| {
                let own = s.as_str().to_ascii_lowercase();
                own.strip_suffix("scheduler") == Some(wanted)
            })
            .ok_or_else(|| UnknownScheduler(name.to_string()))
    }
}

impl Serialize for SchedulerName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SchedulerName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_parse_as_diffusers_classes() {
        for s in SchedulerName::ALL {
            assert_eq!(s.as_str().parse::<SchedulerName>(), Ok(s));
        }
        assert_eq!(
            "dpmsolvermultistep".parse::<SchedulerName>(),
            Ok(SchedulerName::DpmSolverMultistep)
        );
        let err = "PNDMScheduler".parse::<SchedulerName>().unwrap_err();
        assert!(err.to_string().contains("UniPCMultistepScheduler"), "{err}");
    }

    #[test]
    fn default_choice_serialises_to_nothing_and_old_jobs_read_as_default() {
        let choice = ModelChoice::default();
        assert_eq!(serde_json::to_string(&choice).unwrap(), "{}");
        let read: ModelChoice = serde_json::from_str("{}").unwrap();
        assert_eq!(read.clip_skip, 1);
        assert!(read.is_default());
        let chosen = ModelChoice {
            model_id: Some("realistic".into()),
            loras: vec![LoraChoice {
                name: "film".into(),
                strength: 0.7,
            }],
            scheduler: Some(SchedulerName::EulerAncestralDiscrete),
            karras_sigmas: Some(true),
            clip_skip: 2,
        };
        let json = serde_json::to_string(&chosen).unwrap();
        assert_eq!(serde_json::from_str::<ModelChoice>(&json).unwrap(), chosen);
        assert!(!chosen.is_default());
    }
}
