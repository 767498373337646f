//! Where a model's tensors sit inside its weights file.
//!
//! transformers moves module prefixes between versions and accepts the other spelling on load:
//! 5.x builds `CLIPTextModel` / `CLIPVisionModel` without their inner transformer, so
//! `text_encoder/model.safetensors` loses `text_model.` and a safety checker's tower loses one of
//! its two `vision_model.` levels; on load 5.x strips the old prefix (`PrefixChange` in its
//! `conversion_mapping.py`), and both strip CLIP's base-model prefix `clip.` (keys of a model
//! that wraps CLIP). We accept every spelling either version accepts (tried by renaming the keys
//! of a saved model and counting missing/unexpected ones, see tools/fixtures/README.md). As in transformers, the layout is decided once per file from its
//! keys (one probe tensor), so a tensor missing from the chosen layout is reported by its full name.

use candle_core::Result;
use candle_nn::VarBuilder;

/// The prefixes a module may sit under in a file, and a tensor every spelling of it holds.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// What the module is, for errors ("CLIP text encoder").
    pub what: &'static str,
    /// Candidate prefixes ("" = the file's root), most common first.
    pub prefixes: &'static [&'static str],
    /// A tensor name below the prefix that every candidate layout has.
    pub probe: &'static str,
}

/// transformers' `CLIPTextModel` (or `CLIPTextModelWithProjection`) file: 4.x writes
/// `text_model.*`, 5.x writes `embeddings.*` / `encoder.*` / `final_layer_norm.*`. Loading,
/// 4.x also takes `clip.text_model.*` and 5.x `clip.*` (the base-model prefix stripped).
pub const CLIP_TEXT_MODEL: Layout = Layout {
    what: "CLIP text encoder",
    prefixes: &["text_model", "", "clip.text_model", "clip"],
    probe: "embeddings.token_embedding.weight",
};

/// The vision tower in a `CLIPVisionModelWithProjection` file (the FaceID image encoder):
/// `vision_model.*` in 4.x and 5.x; 5.x also loads `vision_model.vision_model.*` (a 4.x
/// `CLIPVisionModel` nested one level deeper) and a bare tower at the root, 4.x
/// `clip.vision_model.*` (the base-model prefix stripped).
pub const CLIP_VISION_WITH_PROJECTION: Layout = Layout {
    what: "CLIP vision tower",
    prefixes: &[
        "vision_model",
        "vision_model.vision_model",
        "",
        "clip.vision_model",
    ],
    probe: "embeddings.patch_embedding.weight",
};

/// The vision tower of diffusers' `StableDiffusionSafetyChecker` (a `CLIPVisionModel` under
/// `vision_model`): `vision_model.vision_model.*` when written with transformers 4.x (the
/// CompVis file), `vision_model.*` with 5.x.
pub const SAFETY_CHECKER_VISION: Layout = Layout {
    what: "safety checker vision tower",
    prefixes: &["vision_model.vision_model", "vision_model"],
    probe: "embeddings.patch_embedding.weight",
};

/// `a.b`, leaving out empty parts.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}

impl Layout {
    /// The prefix (relative to `vb`) this file uses, or an error naming every key looked for.
    pub fn find_prefix(&self, vb: &VarBuilder) -> Result<&'static str> {
        if let Some(prefix) = self
            .prefixes
            .iter()
            .find(|p| vb.contains_tensor(&join(p, self.probe)))
        {
            return Ok(prefix);
        }
        let at = vb.prefix();
        let looked_for: Vec<String> = self
            .prefixes
            .iter()
            .map(|p| format!("`{}`", join(&join(&at, p), self.probe)))
            .collect();
        candle_core::bail!(
            "no {} weights in this file: none of {} is present (neither the transformers 4.x nor the 5.x layout)",
            self.what,
            looked_for.join(", ")
        )
    }

    /// Runs `load` with `vb` moved to the module's prefix in this file. When no layout's probe
    /// is there (a file of another model, or a builder that makes tensors on demand such as a
    /// `VarMap`), the first spelling is used, and if `load` then fails the error names every key
    /// looked for.
    pub fn load<'a, T>(
        &self,
        vb: &VarBuilder<'a>,
        load: impl FnOnce(VarBuilder<'a>) -> Result<T>,
    ) -> Result<T> {
        let at = |prefix: &str| {
            if prefix.is_empty() {
                vb.clone()
            } else {
                vb.pp(prefix)
            }
        };
        match self.find_prefix(vb) {
            Ok(prefix) => {
                tracing::debug!(module = self.what, prefix, "weights layout");
                load(at(prefix))
            }
            Err(none_found) => load(at(self.prefixes[0])).map_err(|_| none_found),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn file(names: &[&str]) -> VarBuilder<'static> {
        let tensors: HashMap<String, Tensor> = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
    }

    #[test]
    fn text_encoder_prefix_of_each_transformers_layout() {
        let cases = [
            ("text_model.embeddings.token_embedding.weight", "text_model"),
            ("embeddings.token_embedding.weight", ""),
            (
                "clip.text_model.embeddings.token_embedding.weight",
                "clip.text_model",
            ),
            ("clip.embeddings.token_embedding.weight", "clip"),
        ];
        for (key, prefix) in cases {
            assert_eq!(
                CLIP_TEXT_MODEL.find_prefix(&file(&[key])).unwrap(),
                prefix,
                "{key}"
            );
        }
        // The builder handed to the loader reads the file's own tensor names.
        let found = CLIP_TEXT_MODEL
            .load(&file(&["embeddings.token_embedding.weight"]), |vb| {
                Ok(vb.contains_tensor("embeddings.token_embedding.weight"))
            })
            .unwrap();
        assert!(found);
    }

    #[test]
    fn safety_tower_prefers_the_deeper_layout_when_both_exist() {
        let deep = "vision_model.vision_model.embeddings.patch_embedding.weight";
        let flat = "vision_model.embeddings.patch_embedding.weight";
        assert_eq!(
            SAFETY_CHECKER_VISION.find_prefix(&file(&[flat])).unwrap(),
            "vision_model"
        );
        assert_eq!(
            SAFETY_CHECKER_VISION.find_prefix(&file(&[deep])).unwrap(),
            "vision_model.vision_model"
        );
        assert_eq!(
            CLIP_VISION_WITH_PROJECTION
                .find_prefix(&file(&["embeddings.patch_embedding.weight"]))
                .unwrap(),
            ""
        );
    }

    #[test]
    fn builders_that_create_tensors_get_the_first_spelling() {
        // A VarMap has no tensors until asked: models built from scratch use the 4.x names.
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        CLIP_TEXT_MODEL
            .load(&vb, |vb| vb.get(3, "embeddings.token_embedding.weight"))
            .unwrap();
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert_eq!(names, ["text_model.embeddings.token_embedding.weight"]);
        // A failing load in no layout reports every spelling, not just the first.
        let err = CLIP_TEXT_MODEL
            .load(&file(&["unrelated"]), |vb| {
                vb.get(3, "embeddings.token_embedding.weight")
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`clip.embeddings.token_embedding.weight`"),
            "{err}"
        );
    }

    #[test]
    fn missing_weights_name_every_key_looked_for() {
        let err = SAFETY_CHECKER_VISION
            .find_prefix(&file(&["concept_embeds"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("safety checker vision tower"), "{err}");
        assert!(
            err.contains("`vision_model.vision_model.embeddings.patch_embedding.weight`"),
            "{err}"
        );
        assert!(
            err.contains("`vision_model.embeddings.patch_embedding.weight`"),
            "{err}"
        );
        // Relative to where the builder already points.
        let err = CLIP_TEXT_MODEL
            .find_prefix(&file(&[]).pp("text_encoder"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`text_encoder.embeddings.token_embedding.weight`"),
            "{err}"
        );
        assert!(
            err.contains("`text_encoder.text_model.embeddings.token_embedding.weight`"),
            "{err}"
        );
    }
}
