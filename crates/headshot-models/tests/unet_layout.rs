//! The UNet and IP-Adapter code fit the real SD1.5 / FaceID-PlusV2 layouts: parameter counts,
//! adapter layer numbering, shape errors, and a forward pass of the full-size UNet.
//! Weights are constant tensors broadcast from one element, so the full-size model costs
//! almost no memory (only the LoRA-fused attention weights are materialised).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use headshot_models::ip_adapter::{
    attention_layer_sites, layer_indices, IpAdapterError, IpAdapterWeights,
};
use headshot_models::unet::{IpAdapterAttachment, UNet2DConditionModel, UNetConfig};

/// `unet/config.json` of stable-diffusion-v1-5 as published.
const SD15_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// Parameters of the SD1.5 UNet (`sum(p.numel() for p in unet.parameters())`).
const SD15_UNET_PARAMETERS: usize = 859_520_964;

/// The real adapter layout, written out independently of the code under test:
/// (N, attention path, hidden width) for SD1.5, in diffusers' attn_processors order.
fn sd15_adapter_layout() -> Vec<(usize, String, usize)> {
    let mut transformers: Vec<(String, usize)> = Vec::new();
    for (block, width) in [(0, 320), (1, 640), (2, 1280)] {
        for j in 0..2 {
            transformers.push((format!("down_blocks.{block}.attentions.{j}"), width));
        }
    }
    for (block, width) in [(1, 1280), (2, 640), (3, 320)] {
        for j in 0..3 {
            transformers.push((format!("up_blocks.{block}.attentions.{j}"), width));
        }
    }
    transformers.push(("mid_block.attentions.0".to_string(), 1280));
    let mut layout = Vec::new();
    for (prefix, width) in transformers {
        for attn in ["attn1", "attn2"] {
            layout.push((
                layout.len(),
                format!("{prefix}.transformer_blocks.0.{attn}"),
                width,
            ));
        }
    }
    layout
}

/// One constant value broadcast to `shape`: no memory behind it.
fn constant(value: f32, shape: &[usize]) -> Tensor {
    Tensor::new(value, &Device::Cpu)
        .unwrap()
        .broadcast_as(shape)
        .unwrap()
}

/// An `ip_adapter` dict in h94's layout (rank-128 LoRA on every layer, id projections on odd).
fn faceid_adapter_dict(
    layout: &[(usize, String, usize)],
    cross_dim: usize,
    rank: usize,
) -> HashMap<String, Tensor> {
    let mut dict = HashMap::new();
    for (n, _, hidden) in layout {
        let kv_in = if n % 2 == 1 { cross_dim } else { *hidden };
        for (name, input) in [
            ("to_q", *hidden),
            ("to_k", kv_in),
            ("to_v", kv_in),
            ("to_out", *hidden),
        ] {
            dict.insert(
                format!("{n}.{name}_lora.down.weight"),
                constant(1e-3, &[rank, input]),
            );
            dict.insert(
                format!("{n}.{name}_lora.up.weight"),
                constant(1e-3, &[*hidden, rank]),
            );
        }
        if n % 2 == 1 {
            dict.insert(
                format!("{n}.to_k_ip.weight"),
                constant(1e-3, &[*hidden, cross_dim]),
            );
            dict.insert(
                format!("{n}.to_v_ip.weight"),
                constant(1e-3, &[*hidden, cross_dim]),
            );
        }
    }
    dict
}

fn adapter(ip_adapter: HashMap<String, Tensor>) -> IpAdapterWeights {
    let image_proj = HashMap::from([("proj.0.weight".to_string(), constant(0.0, &[1024, 512]))]);
    IpAdapterWeights::from_maps(PathBuf::from("test-adapter.bin"), image_proj, ip_adapter).unwrap()
}

/// Records every weight the model asks for and hands out a broadcast constant.
#[derive(Default)]
struct RecordingBackend {
    requested: Mutex<Vec<(String, Vec<usize>)>>,
}

impl SimpleBackend for RecordingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.requested
            .lock()
            .unwrap()
            .push((name.to_string(), s.dims().to_vec()));
        // 1/fan_in keeps activations O(1) through the 100+ layers.
        let fan_in: usize = s.dims().iter().skip(1).product();
        let value = if s.rank() >= 2 {
            1.0 / fan_in as f32
        } else {
            0.01
        };
        let t = Tensor::new(value, dev)?.to_dtype(dtype)?.broadcast_as(s)?;
        // Norm kernels want contiguous vectors; those are small, only matrices stay virtual.
        if t.rank() <= 1 {
            t.contiguous()
        } else {
            Ok(t)
        }
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unexpected unchecked lookup of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

impl SimpleBackend for &'static RecordingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        (**self).get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        (**self).get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        (**self).contains_tensor(name)
    }
}

fn recording_var_builder() -> (&'static RecordingBackend, VarBuilder<'static>) {
    let backend: &'static RecordingBackend = Box::leak(Box::default());
    (
        backend,
        VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu),
    )
}

fn count_unique(backend: &RecordingBackend) -> usize {
    let requested = backend.requested.lock().unwrap();
    let names: BTreeSet<&String> = requested.iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), requested.len(), "a weight was requested twice");
    requested
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

#[test]
fn sd15_config_parses_like_diffusers() {
    let cfg = UNetConfig::from_json_str(SD15_UNET_CONFIG).unwrap();
    let plan = cfg.block_plan().unwrap();
    let heads: Vec<usize> = plan.iter().map(|b| b.heads).collect();
    assert_eq!(
        heads,
        vec![8, 8, 8, 8],
        "legacy attention_head_dim is the head count"
    );
    assert_eq!(cfg.time_embed_dim(), 1280);
    assert_eq!(cfg.cross_attention_dim, 768);
    assert_eq!(cfg.sample_size, Some(64));
    assert_eq!(
        UNetConfig::sd15().block_out_channels,
        cfg.block_out_channels
    );
}

#[test]
fn unsupported_configs_are_rejected_with_the_key() {
    let sdxl_like = SD15_UNET_CONFIG.replace(
        "\"act_fn\"",
        "\"addition_embed_type\": \"text_time\", \"act_fn\"",
    );
    let err = UNetConfig::from_json_str(&sdxl_like)
        .unwrap_err()
        .to_string();
    assert!(err.contains("addition_embed_type"), "{err}");
    let bad_block = SD15_UNET_CONFIG.replace("\"DownBlock2D\"]", "\"KDownBlock2D\"]");
    let err = UNetConfig::from_json_str(&bad_block)
        .unwrap_err()
        .to_string();
    assert!(err.contains("KDownBlock2D"), "{err}");
}

#[test]
fn sd15_unet_requests_exactly_the_diffusers_parameters() {
    let cfg = UNetConfig::from_json_str(SD15_UNET_CONFIG).unwrap();
    let (backend, vb) = recording_var_builder();
    UNet2DConditionModel::load(vb, &cfg, None).unwrap();
    assert_eq!(count_unique(backend), SD15_UNET_PARAMETERS);
    let requested = backend.requested.lock().unwrap();
    let names: BTreeSet<&str> = requested.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "conv_in.weight",
        "time_embedding.linear_1.weight",
        "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
        "down_blocks.3.resnets.1.conv2.bias",
        "mid_block.attentions.0.proj_in.weight",
        "up_blocks.0.upsamplers.0.conv.weight",
        "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight",
        "up_blocks.1.resnets.2.conv_shortcut.weight",
        "conv_norm_out.weight",
        "conv_out.bias",
    ] {
        assert!(names.contains(name), "missing {name}");
    }
}

#[test]
fn adapter_layers_follow_the_attn_processors_order() {
    let cfg = UNetConfig::from_json_str(SD15_UNET_CONFIG).unwrap();
    let sites = attention_layer_sites(&cfg).unwrap();
    let expected = sd15_adapter_layout();
    assert_eq!(sites.len(), 32);
    for (site, (n, path, hidden)) in sites.iter().zip(&expected) {
        assert_eq!((site.index, &site.path, site.hidden), (*n, path, *hidden));
        assert_eq!(site.cross, n % 2 == 1);
        assert_eq!(site.context_dim, if site.cross { 768 } else { *hidden });
    }
}

#[test]
fn faceid_adapter_maps_every_layer_of_the_real_layout() {
    let cfg = UNetConfig::from_json_str(SD15_UNET_CONFIG).unwrap();
    let layout = sd15_adapter_layout();
    let dict = faceid_adapter_dict(&layout, 768, 128);
    assert_eq!(layer_indices(&dict), (0..32).collect());
    let weights = adapter(dict);
    let layers = weights.unet_layers(&cfg).unwrap();
    assert_eq!(layers.len(), 32);
    for (n, path, _) in &layout {
        let layer = &layers[path];
        assert_eq!(layer.index, *n, "{path}");
        assert!(layer.lora.is_some(), "{path} has no LoRA");
        assert_eq!(layer.ip.is_some(), n % 2 == 1, "{path}");
    }
    // to_k_ip + to_v_ip: 2 * 768 * (5*320 + 5*640 + 6*1280) over the 16 cross layers.
    let ip: usize = layers.values().map(|l| l.ip_parameter_count()).sum();
    assert_eq!(ip, 19_169_280);
    // Rank 128: 1024*C per self layer, 128*(6*C + 2*768) per cross layer.
    let lora: usize = layers.values().map(|l| l.lora_parameter_count()).sum();
    assert_eq!(lora, 25_509_888);
}

#[test]
fn adapter_errors_name_the_key_and_the_expected_shape() {
    let cfg = UNetConfig::from_json_str(SD15_UNET_CONFIG).unwrap();
    let layout = sd15_adapter_layout();

    let mut wrong = faceid_adapter_dict(&layout, 768, 128);
    wrong.insert("13.to_k_ip.weight".into(), constant(0.0, &[1280, 1024]));
    let err = adapter(wrong).unet_layers(&cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IpAdapterError::Shape { .. }), "{msg}");
    assert!(
        msg.contains("13.to_k_ip.weight")
            && msg.contains("[1280, 768]")
            && msg.contains("[1280, 1024]"),
        "{msg}"
    );
    assert!(
        msg.contains("up_blocks.1.attentions.0.transformer_blocks.0.attn2"),
        "{msg}"
    );

    let mut missing = faceid_adapter_dict(&layout, 768, 128);
    missing.remove("30.to_out_lora.up.weight");
    let msg = adapter(missing).unet_layers(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("30.to_out_lora.up.weight") && msg.contains("[1280, 128]"),
        "{msg}"
    );
    assert!(
        msg.contains("mid_block.attentions.0.transformer_blocks.0.attn1"),
        "{msg}"
    );

    let mut no_ip = faceid_adapter_dict(&layout, 768, 128);
    no_ip.remove("1.to_v_ip.weight");
    let msg = adapter(no_ip).unet_layers(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("1.to_v_ip.weight") && msg.contains("[320, 768]"),
        "{msg}"
    );

    let mut extra = faceid_adapter_dict(&layout, 768, 128);
    extra.insert("33.to_k_ip.weight".into(), constant(0.0, &[1280, 768]));
    let err = adapter(extra).unet_layers(&cfg).unwrap_err();
    assert!(
        matches!(
            err,
            IpAdapterError::ExtraLayer {
                index: 33,
                count: 32,
                ..
            }
        ),
        "{err}"
    );

    // An SD1.5 adapter does not fit a UNet with another cross-attention width.
    let other = UNetConfig::from_json_str(&SD15_UNET_CONFIG.replace("768", "1024")).unwrap();
    let msg = adapter(faceid_adapter_dict(&layout, 768, 128))
        .unet_layers(&other)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1024"), "{msg}");
}

#[test]
fn full_size_unet_with_faceid_adapter_runs_a_step() {
    let cfg = UNetConfig::from_json_str(SD15_UNET_CONFIG).unwrap();
    let weights = adapter(faceid_adapter_dict(&sd15_adapter_layout(), 768, 128));
    let (backend, vb) = recording_var_builder();
    let attachment = IpAdapterAttachment {
        weights: &weights,
        num_tokens: 4,
        scale: 1.0,
    };
    let unet = UNet2DConditionModel::load(vb, &cfg, Some(attachment)).unwrap();
    // LoRA fusing adds no parameters; the id projections add 19,169,280.
    let ip: usize = weights
        .unet_layers(&cfg)
        .unwrap()
        .values()
        .map(|l| l.ip_parameter_count())
        .sum();
    assert_eq!(
        count_unique(backend) + ip,
        SD15_UNET_PARAMETERS + 19_169_280
    );
    assert_eq!(unet.num_ip_tokens(), Some(4));

    let latents = Tensor::randn(0f32, 1., (1, 4, 16, 16), &Device::Cpu).unwrap();
    let context = Tensor::randn(0f32, 1., (1, 81, 768), &Device::Cpu).unwrap();
    let eps = unet.forward(&latents, 981.0, &context).unwrap();
    assert_eq!(eps.dims(), &[1, 4, 16, 16]);
    let finite = eps
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite());
    assert!(finite, "non-finite UNet output");

    // With the adapter, the context must hold text tokens and the 4 id tokens.
    let short = Tensor::zeros((1, 4, 768), DType::F32, &Device::Cpu).unwrap();
    let msg = unet
        .forward(&latents, 981.0, &short)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("4 id tokens"), "{msg}");
}
