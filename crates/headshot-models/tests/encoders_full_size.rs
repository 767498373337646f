//! The encoders at their real sizes (zero weights): the ViT-H/14 image encoder and the
//! FaceID-PlusV2 projection of `ip-adapter-faceid-plusv2_sd15.bin`. Parameter counts are those
//! of transformers' `CLIPVisionModelWithProjection(...).vision_model` (630,766,080; 632,076,800
//! with `visual_projection`) and diffusers' `IPAdapterFaceIDPlusImageProjection(768, 768, 1280,
//! heads=12)` (33,581,568), SD1.5's `CLIPTextModel` (123,060,480) and `AutoencoderKL`'s decoder +
//! post_quant_conv (49,490,179 + 20), which proves every real tensor is requested with its real shape.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::face_projection::{FaceIdPlusConfig, FaceIdPlusProjection};
use headshot_models::vae::{VaeConfig, VaeDecoder};

/// Hands out zero tensors and records every name and shape asked for.
#[derive(Clone, Default)]
struct RecordingZeros {
    requested: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl RecordingZeros {
    fn builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    fn parameter_count(&self) -> usize {
        self.requested
            .lock()
            .unwrap()
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.requested.lock().unwrap().clone()
    }
}

impl SimpleBackend for RecordingZeros {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.requested
            .lock()
            .unwrap()
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("RecordingZeros cannot guess the shape of {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

const VIT_H_LAYER_PARAMS: usize = 19_677_440;
const VIT_H_VISION_MODEL_PARAMS: usize = 630_766_080;

#[test]
fn vit_h_14_image_encoder_has_the_real_parameter_count_and_output_shapes() {
    let json = r#"{"architectures": ["CLIPVisionModelWithProjection"], "hidden_act": "gelu",
        "hidden_size": 1280, "image_size": 224, "intermediate_size": 5120, "layer_norm_eps": 1e-05,
        "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 32, "patch_size": 14,
        "projection_dim": 1024}"#;
    let cfg =
        ClipVisionConfig::from_json_str(json, std::path::Path::new("image_encoder/config.json"))
            .unwrap();
    assert_eq!(cfg.num_positions(), 257);
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.num_attention_heads,
            cfg.intermediate_size,
            cfg.hidden_act
        ),
        (1280, 32, 16, 5120, ClipVisionConfig::vit_h_14().hidden_act)
    );

    // FaceID loads everything but the last layer and post_layernorm.
    let recorder = RecordingZeros::default();
    let tower = ClipVisionTransformer::load_for(
        recorder.builder().pp("vision_model"),
        &cfg,
        ClipVisionOutputs::PenultimateOnly,
    )
    .unwrap();
    assert_eq!(
        recorder.parameter_count(),
        VIT_H_VISION_MODEL_PARAMS - VIT_H_LAYER_PARAMS - 2 * 1280
    );
    let shapes = recorder.shapes();
    assert_eq!(
        shapes["vision_model.embeddings.patch_embedding.weight"],
        [1280, 3, 14, 14]
    );
    assert_eq!(
        shapes["vision_model.embeddings.position_embedding.weight"],
        [257, 1280]
    );
    assert_eq!(shapes["vision_model.pre_layrnorm.weight"], [1280]);
    assert_eq!(
        shapes["vision_model.encoder.layers.30.mlp.fc1.weight"],
        [5120, 1280]
    );
    assert!(!shapes.contains_key("vision_model.encoder.layers.31.mlp.fc1.weight"));

    let pixels = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu).unwrap();
    let hidden = tower.penultimate_hidden_states(&pixels).unwrap();
    assert_eq!(hidden.dims(), &[1, 257, 1280]);
    drop(tower);

    // The full tower (safety-checker style use) requests every vision_model tensor.
    let recorder = RecordingZeros::default();
    let tower = ClipVisionTransformer::load(recorder.builder().pp("vision_model"), &cfg).unwrap();
    assert_eq!(recorder.parameter_count(), VIT_H_VISION_MODEL_PARAMS);
    assert_eq!(
        recorder.shapes()["vision_model.post_layernorm.weight"],
        [1280]
    );
    assert_eq!(tower.pooled_output(&pixels).unwrap().dims(), &[1, 1280]);
}

#[test]
fn faceid_plusv2_projection_has_the_real_parameter_count_and_output_shape() {
    let cfg = FaceIdPlusConfig::sd15();
    let recorder = RecordingZeros::default();
    let projection = FaceIdPlusProjection::load(recorder.builder(), &cfg).unwrap();
    assert_eq!(recorder.parameter_count(), 33_581_568);
    let shapes = recorder.shapes();
    assert_eq!(shapes["proj.0.weight"], [1024, 512]);
    assert_eq!(shapes["proj.2.weight"], [3072, 1024]);
    assert_eq!(shapes["perceiver_resampler.proj_in.weight"], [768, 1280]);
    assert_eq!(
        shapes["perceiver_resampler.layers.3.0.to_kv.weight"],
        [1536, 768]
    );
    assert_eq!(
        shapes["perceiver_resampler.layers.3.1.1.weight"],
        [3072, 768]
    );

    let dev = Device::Cpu;
    let id = Tensor::zeros((1, 512), DType::F32, &dev).unwrap();
    let clip = Tensor::zeros((1, 257, 1280), DType::F32, &dev).unwrap();
    assert_eq!(
        projection.forward(&id, &clip, 1.0).unwrap().dims(),
        &[1, 4, 768]
    );

    // The same shapes, held as real tensors, give back the real config by inference.
    let tensors: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(name, dims)| {
            (
                name.clone(),
                Tensor::zeros(dims.as_slice(), DType::F32, &dev).unwrap(),
            )
        })
        .collect();
    let inferred =
        FaceIdPlusConfig::from_weights(&VarBuilder::from_tensors(tensors, DType::F32, &dev))
            .unwrap();
    assert_eq!(inferred, cfg);
}

#[test]
fn sd15_text_encoder_has_the_real_parameter_count_and_output_shape() {
    let recorder = RecordingZeros::default();
    let encoder = ClipTextEncoder::load(recorder.builder(), &ClipTextConfig::sd15()).unwrap();
    assert_eq!(recorder.parameter_count(), 123_060_480);
    assert_eq!(
        recorder.shapes()["text_model.embeddings.token_embedding.weight"],
        [49408, 768]
    );
    let ids = Tensor::zeros((2, 77), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(encoder.forward(&ids).unwrap().dims(), &[2, 77, 768]);
}

#[test]
fn sd15_vae_decoder_has_the_real_parameter_count_and_output_shape() {
    let recorder = RecordingZeros::default();
    let vae = VaeDecoder::load(recorder.builder(), &VaeConfig::sd15()).unwrap();
    assert_eq!(recorder.parameter_count(), 49_490_179 + 20);
    let shapes = recorder.shapes();
    assert!(shapes
        .keys()
        .all(|k| k.starts_with("decoder.") || k.starts_with("post_quant_conv.")));
    assert_eq!(
        shapes["decoder.mid_block.attentions.0.to_q.weight"],
        [512, 512]
    );
    assert_eq!(
        shapes["decoder.up_blocks.3.resnets.0.conv_shortcut.weight"],
        [128, 256, 1, 1]
    );
    let latents = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(vae.decode(&latents).unwrap().dims(), &[1, 3, 64, 64]);
}
