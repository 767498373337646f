//! One UNet step on the tiny model set against diffusers (`tests/fixtures/goldens/unet_step.safetensors`):
//! plain SD, the FaceID-PlusV2 adapter (fused LoRA + id tokens), and LoRA only (ip scale 0).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::unet::{IpAdapterAttachment, UNet2DConditionModel, UNetConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

struct Setup {
    golden: HashMap<String, Tensor>,
    config: UNetConfig,
    vb: VarBuilder<'static>,
    timestep: f64,
}

fn setup() -> Result<Setup> {
    let golden_path = fixtures().join("goldens/unet_step.safetensors");
    let golden = candle_core::safetensors::load(&golden_path, &Device::Cpu)
        .with_context(|| format!("reading {}", golden_path.display()))?;
    let unet_dir = fixtures().join("tiny/sd15/unet");
    let config = UNetConfig::from_file(&unet_dir.join("config.json"))?;
    let weights = unet_dir.join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
    let timestep = golden["timestep"]
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(Setup {
        golden,
        config,
        vb,
        timestep,
    })
}

fn adapter() -> Result<IpAdapterWeights> {
    Ok(IpAdapterWeights::load(&fixtures().join(
        "tiny/ip-adapter/ip-adapter-faceid-plusv2_sd15.bin",
    ))?)
}

/// Max |a - b| must stay within 1e-4 of the reference's magnitude (at least 1).
fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) -> Result<()> {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let diff = (actual - expected)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let scale = expected
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?
        .max(1.0);
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max abs diff {diff} (reference max {scale})"
    );
    Ok(())
}

#[test]
fn plain_unet_matches_diffusers() -> Result<()> {
    let s = setup()?;
    let unet = UNet2DConditionModel::load(s.vb, &s.config, None)?;
    assert_eq!(unet.num_ip_tokens(), None);
    let eps = unet.forward(
        &s.golden["latents"],
        s.timestep,
        &s.golden["encoder_hidden_states"],
    )?;
    assert_close(&eps, &s.golden["noise_pred_plain"], "plain UNet")
}

#[test]
fn faceid_adapter_unet_matches_diffusers() -> Result<()> {
    let s = setup()?;
    let weights = adapter()?;
    let attachment = IpAdapterAttachment {
        weights: &weights,
        num_tokens: 4,
        scale: 1.0,
    };
    let mut unet = UNet2DConditionModel::load(s.vb, &s.config, Some(attachment))?;
    let context = Tensor::cat(
        &[&s.golden["encoder_hidden_states"], &s.golden["id_tokens"]],
        1,
    )?;

    let eps = unet.forward(&s.golden["latents"], s.timestep, &context)?;
    assert_close(
        &eps,
        &s.golden["noise_pred_ip"],
        "UNet with LoRA and id tokens",
    )?;

    unet.set_ip_adapter_scale(0.0);
    let eps = unet.forward(&s.golden["latents"], s.timestep, &context)?;
    assert_close(
        &eps,
        &s.golden["noise_pred_lora_only"],
        "UNet with LoRA, ip scale 0",
    )?;

    // The id tokens matter: the adapter output differs from plain SD and from LoRA only.
    let gap = (&s.golden["noise_pred_ip"] - &s.golden["noise_pred_lora_only"])?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(
        gap > 1e-2,
        "goldens do not exercise the id attention (gap {gap})"
    );
    Ok(())
}

#[test]
fn tiny_adapter_file_covers_every_attention_layer() -> Result<()> {
    let s = setup()?;
    let weights = adapter()?;
    let sites = headshot_models::ip_adapter::attention_layer_sites(&s.config)?;
    let in_file = headshot_models::ip_adapter::layer_indices(weights.ip_adapter());
    assert_eq!(in_file, (0..sites.len()).collect());
    let layers = weights.unet_layers(&s.config)?;
    assert_eq!(layers.len(), sites.len());
    assert!(layers.values().all(|l| l.lora.is_some()));
    assert_eq!(
        layers.values().filter(|l| l.ip.is_some()).count(),
        sites.len() / 2
    );
    // The projection half is exposed for the face projection's VarBuilder.
    assert!(weights
        .image_proj()
        .contains_key("perceiver_resampler.proj_in.weight"));
    let vb = weights.image_proj_var_builder(DType::F32, &Device::Cpu);
    assert_eq!(vb.get((1024, 512), "proj.0.weight")?.dims(), &[1024, 512]);
    Ok(())
}

/// The model runs in half precision too (the GPU path); on CPU f16 it tracks f32 closely.
#[test]
fn f16_unet_tracks_f32() -> Result<()> {
    let s = setup()?;
    let weights = adapter()?;
    let file = fixtures().join("tiny/sd15/unet/diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while mapped.
    let vb16 = unsafe { VarBuilder::from_mmaped_safetensors(&[file], DType::F16, &Device::Cpu)? };
    let attach = |w| {
        Some(IpAdapterAttachment {
            weights: w,
            num_tokens: 4,
            scale: 1.0,
        })
    };
    let unet32 = UNet2DConditionModel::load(s.vb, &s.config, attach(&weights))?;
    let unet16 = UNet2DConditionModel::load(vb16, &s.config, attach(&weights))?;
    assert_eq!(unet16.dtype(), DType::F16);
    // A 16x16 corner of the golden latents keeps the test quick.
    let latents = s.golden["latents"]
        .narrow(2, 0, 16)?
        .narrow(3, 0, 16)?
        .contiguous()?;
    let context = Tensor::cat(
        &[&s.golden["encoder_hidden_states"], &s.golden["id_tokens"]],
        1,
    )?;
    let eps32 = unet32.forward(&latents, s.timestep, &context)?;
    let eps16 = unet16.forward(&latents.to_dtype(DType::F16)?, s.timestep, &context)?;
    assert_eq!(eps16.dtype(), DType::F16);
    let diff = (eps16.to_dtype(DType::F32)? - &eps32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let scale = eps32
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?
        .max(1.0);
    assert!(
        diff <= 2e-2 * scale,
        "f16 vs f32: max abs diff {diff} (scale {scale})"
    );
    Ok(())
}
