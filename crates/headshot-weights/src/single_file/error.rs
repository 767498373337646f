//! What can be wrong with a single-file checkpoint, each naming the file and what to do.

use std::path::PathBuf;

use super::Part;

#[derive(Debug, thiserror::Error)]
pub enum SingleFileError {
    #[error(
        "checkpoint {path}: `.{extension}` is not a checkpoint format this server reads; \
         use a `.safetensors` file or a `.ckpt` (torch zip pickle)"
    )]
    UnknownFormat { path: PathBuf, extension: String },

    #[error(
        "cannot read the checkpoint {path} as {format}: the file is truncated or corrupt, or is \
         not {format}; download it again"
    )]
    Unreadable {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: candle_core::Error,
    },

    #[error(
        "checkpoint {path} is an SDXL model (it has `conditioner.embedders.*` keys); this server \
         runs Stable Diffusion 1.5 models: use an SD1.5 fine-tune"
    )]
    Sdxl { path: PathBuf },

    #[error(
        "checkpoint {path} is a Stable Diffusion 2.x model ({evidence}); this server runs Stable \
         Diffusion 1.5 models: use an SD1.5 fine-tune"
    )]
    Sd2 { path: PathBuf, evidence: String },

    #[error(
        "checkpoint {path} holds no Stable Diffusion 1.5 weights in the original (LDM / A1111) \
         layout (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`); \
         its first keys: {first_keys}{hint}"
    )]
    NotLdm {
        path: PathBuf,
        first_keys: String,
        hint: &'static str,
    },

    #[error(
        "checkpoint {path} has no {part} weights (no `{prefix}*` keys); list the {part}'s own \
         weights file in its manifest component instead"
    )]
    PartMissing {
        path: PathBuf,
        part: Part,
        prefix: &'static str,
    },

    #[error(
        "checkpoint {path}: the {part} needs {count} tensors the file does not have; first \
         missing: {first}. Is it an SD1.5 checkpoint with the configured {part} config?"
    )]
    MissingTensors {
        path: PathBuf,
        part: Part,
        count: usize,
        first: String,
    },

    #[error("checkpoint {path}: cannot build the {part} from its tensors")]
    Build {
        path: PathBuf,
        part: Part,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
