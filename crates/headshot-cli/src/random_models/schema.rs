//! Every tensor of each file, with diffusers' / transformers' names and shapes, and how to draw
//! its values. The statistics follow tools/fixtures/gen_models.py (torch's default fan-in init,
//! norms perturbed around 1 / 0, output convolutions scaled), so activations stay finite and
//! non-degenerate through a full DDIM run in f16.

use super::dims::*;

/// E[silu(z)] and E[silu(z)^2] for z ~ N(0, 1): what a GroupNorm + SiLU hands the output
/// convolutions, used to scale them analytically instead of by a calibration forward pass.
pub const SILU_MEAN: f64 = 0.206_621;
pub const SILU_SQUARE_MEAN: f64 = 0.355_776;

#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// torch's default for Linear/Conv (uniform +-1/sqrt(fan_in)): N(0, 1 / (3 fan_in)).
    FanIn(usize),
    /// N(mean, std^2).
    Normal { mean: f64, std: f64 },
    /// Per output channel `-SILU_MEAN * sum(weight[c])`: centres a conv fed by GroupNorm + SiLU.
    CentredBias { weight: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl Spec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Collects specs under a name prefix.
#[derive(Default)]
pub struct Builder {
    pub specs: Vec<Spec>,
}

impl Builder {
    fn push(&mut self, name: String, shape: Vec<usize>, init: Init) {
        self.specs.push(Spec { name, shape, init });
    }

    fn normal(&mut self, name: String, shape: Vec<usize>, mean: f64, std: f64) {
        self.push(name, shape, Init::Normal { mean, std });
    }

    fn linear(&mut self, name: &str, input: usize, output: usize, bias: bool) {
        self.push(
            format!("{name}.weight"),
            vec![output, input],
            Init::FanIn(input),
        );
        if bias {
            self.push(format!("{name}.bias"), vec![output], Init::FanIn(input));
        }
    }

    fn conv(&mut self, name: &str, input: usize, output: usize, k: usize) {
        let fan_in = input * k * k;
        self.push(
            format!("{name}.weight"),
            vec![output, input, k, k],
            Init::FanIn(fan_in),
        );
        self.push(format!("{name}.bias"), vec![output], Init::FanIn(fan_in));
    }

    /// LayerNorm / GroupNorm: weight 1 + 0.1 N, bias 0.1 N (gen_models.perturb_norms).
    fn norm(&mut self, name: &str, dim: usize) {
        self.normal(format!("{name}.weight"), vec![dim], 1.0, 0.1);
        self.normal(format!("{name}.bias"), vec![dim], 0.0, 0.1);
    }

    /// diffusers' ResnetBlock2D (with a time projection in the UNet, without in the VAE).
    fn resnet(&mut self, p: &str, input: usize, output: usize, temb: Option<usize>) {
        self.norm(&format!("{p}.norm1"), input);
        self.conv(&format!("{p}.conv1"), input, output, 3);
        if let Some(temb) = temb {
            self.linear(&format!("{p}.time_emb_proj"), temb, output, true);
        }
        self.norm(&format!("{p}.norm2"), output);
        self.conv(&format!("{p}.conv2"), output, output, 3);
        if input != output {
            self.conv(&format!("{p}.conv_shortcut"), input, output, 1);
        }
    }

    /// Transformer2DModel as SD1.5 stores it: 1x1-conv proj_in/proj_out, one BasicTransformerBlock.
    fn transformer(&mut self, p: &str, c: usize, context: usize) {
        self.norm(&format!("{p}.norm"), c);
        self.conv(&format!("{p}.proj_in"), c, c, 1);
        let b = format!("{p}.transformer_blocks.0");
        for (attn, norm, ctx) in [("attn1", "norm1", c), ("attn2", "norm2", context)] {
            self.norm(&format!("{b}.{norm}"), c);
            self.linear(&format!("{b}.{attn}.to_q"), c, c, false);
            self.linear(&format!("{b}.{attn}.to_k"), ctx, c, false);
            self.linear(&format!("{b}.{attn}.to_v"), ctx, c, false);
            self.linear(&format!("{b}.{attn}.to_out.0"), c, c, true);
        }
        self.norm(&format!("{b}.norm3"), c);
        self.linear(&format!("{b}.ff.net.0.proj"), c, 8 * c, true); // GEGLU: 2 x 4c
        self.linear(&format!("{b}.ff.net.2"), 4 * c, c, true);
        self.conv(&format!("{p}.proj_out"), c, c, 1);
    }

    /// The VAE mid-block attention (diffusers' current names, with biases).
    fn vae_attention(&mut self, p: &str, c: usize) {
        self.norm(&format!("{p}.group_norm"), c);
        for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
            self.linear(&format!("{p}.{proj}"), c, c, true);
        }
    }

    /// CLIP encoder layers (text and vision share the layout).
    fn clip_layers(&mut self, p: &str, layers: usize, hidden: usize, ffn: usize) {
        for l in 0..layers {
            let q = format!("{p}.encoder.layers.{l}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                self.linear(&format!("{q}.self_attn.{proj}"), hidden, hidden, true);
            }
            self.norm(&format!("{q}.layer_norm1"), hidden);
            self.linear(&format!("{q}.mlp.fc1"), hidden, ffn, true);
            self.linear(&format!("{q}.mlp.fc2"), ffn, hidden, true);
            self.norm(&format!("{q}.layer_norm2"), hidden);
        }
    }

    /// transformers' CLIPVisionTransformer under `p` (embeddings, pre/post layer norms, layers).
    fn clip_vision(&mut self, p: &str, hidden: usize, layers: usize, ffn: usize, positions: usize) {
        let e = format!("{p}.embeddings");
        self.normal(
            format!("{e}.class_embedding"),
            vec![hidden],
            0.0,
            (hidden as f64).powf(-0.5),
        );
        let fan_in = 3 * PATCH * PATCH;
        self.push(
            format!("{e}.patch_embedding.weight"),
            vec![hidden, 3, PATCH, PATCH],
            Init::FanIn(fan_in),
        );
        self.normal(
            format!("{e}.position_embedding.weight"),
            vec![positions, hidden],
            0.0,
            0.02,
        );
        self.norm(&format!("{p}.pre_layrnorm"), hidden);
        self.clip_layers(p, layers, hidden, ffn);
        self.norm(&format!("{p}.post_layernorm"), hidden);
    }
}

/// UNet2DConditionModel with SD1.5's block layout.
pub fn unet(d: &Dims) -> Vec<Spec> {
    let ch = d.unet_channels;
    let temb = 4 * ch[0];
    let mut b = Builder::default();
    b.conv("conv_in", 4, ch[0], 3);
    b.linear("time_embedding.linear_1", ch[0], temb, true);
    b.linear("time_embedding.linear_2", temb, temb, true);
    let mut out = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        let input = out;
        out = c;
        for j in 0..2 {
            let p = format!("down_blocks.{i}");
            b.resnet(
                &format!("{p}.resnets.{j}"),
                if j == 0 { input } else { out },
                out,
                Some(temb),
            );
            if i < 3 {
                b.transformer(&format!("{p}.attentions.{j}"), out, d.cross_dim);
            }
        }
        if i < 3 {
            b.conv(&format!("down_blocks.{i}.downsamplers.0.conv"), out, out, 3);
        }
    }
    let top = ch[3];
    b.resnet("mid_block.resnets.0", top, top, Some(temb));
    b.transformer("mid_block.attentions.0", top, d.cross_dim);
    b.resnet("mid_block.resnets.1", top, top, Some(temb));
    let rev = [ch[3], ch[2], ch[1], ch[0]];
    let mut prev = rev[0];
    for i in 0..4 {
        let out = rev[i];
        let input = rev[(i + 1).min(3)];
        for j in 0..3 {
            let skip = if j == 2 { input } else { out };
            let res_in = if j == 0 { prev } else { out };
            b.resnet(
                &format!("up_blocks.{i}.resnets.{j}"),
                res_in + skip,
                out,
                Some(temb),
            );
            if i > 0 {
                b.transformer(&format!("up_blocks.{i}.attentions.{j}"), out, d.cross_dim);
            }
        }
        if i < 3 {
            b.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), out, out, 3);
        }
        prev = out;
    }
    b.norm("conv_norm_out", ch[0]);
    // Unit-size noise predictions, like a trained model (gen_models.build_unet scales them so).
    let fan_in = ch[0] * 9;
    let std = 1.0 / (fan_in as f64 * SILU_SQUARE_MEAN * 1.01).sqrt();
    b.normal("conv_out.weight".into(), vec![4, ch[0], 3, 3], 0.0, std);
    b.normal("conv_out.bias".into(), vec![4], 0.0, 0.0);
    b.specs
}

/// AutoencoderKL (encoder, quant convs, decoder): diffusers needs every tensor; we decode only.
pub fn vae(d: &Dims) -> Vec<Spec> {
    let ch = d.vae_channels;
    let mut b = Builder::default();
    b.conv("encoder.conv_in", 3, ch[0], 3);
    let mut out = ch[0];
    for (i, &c) in ch.iter().enumerate() {
        let input = out;
        out = c;
        for j in 0..2 {
            let res_in = if j == 0 { input } else { out };
            b.resnet(
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                res_in,
                out,
                None,
            );
        }
        if i < 3 {
            b.conv(
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
    }
    for side in ["encoder", "decoder"] {
        if side == "decoder" {
            b.conv("quant_conv", 8, 8, 1);
            b.conv("post_quant_conv", 4, 4, 1);
            b.conv("decoder.conv_in", 4, ch[3], 3);
        }
        b.resnet(&format!("{side}.mid_block.resnets.0"), ch[3], ch[3], None);
        b.vae_attention(&format!("{side}.mid_block.attentions.0"), ch[3]);
        b.resnet(&format!("{side}.mid_block.resnets.1"), ch[3], ch[3], None);
        if side == "encoder" {
            b.norm("encoder.conv_norm_out", ch[3]);
            b.conv("encoder.conv_out", ch[3], 8, 3);
        }
    }
    let rev = [ch[3], ch[2], ch[1], ch[0]];
    let mut prev = rev[0];
    for (i, &out) in rev.iter().enumerate() {
        for j in 0..3 {
            let res_in = if j == 0 { prev } else { out };
            b.resnet(
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                res_in,
                out,
                None,
            );
        }
        if i < 3 {
            b.conv(
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
        prev = out;
    }
    b.norm("decoder.conv_norm_out", ch[0]);
    // Decoded images mostly inside [-1, 1] (std 0.45) and centred, as gen_models.build_vae does.
    let fan_in = ch[0] * 9;
    let std = 0.45 / (fan_in as f64 * SILU_SQUARE_MEAN * 1.01).sqrt();
    b.normal(
        "decoder.conv_out.weight".into(),
        vec![3, ch[0], 3, 3],
        0.0,
        std,
    );
    b.push(
        "decoder.conv_out.bias".into(),
        vec![3],
        Init::CentredBias {
            weight: "decoder.conv_out.weight".into(),
        },
    );
    b.specs
}

/// CLIPTextModel.
pub fn text_encoder(d: &Dims) -> Vec<Spec> {
    let mut b = Builder::default();
    let h = d.cross_dim;
    b.normal(
        "text_model.embeddings.token_embedding.weight".into(),
        vec![VOCAB, h],
        0.0,
        0.02,
    );
    b.normal(
        "text_model.embeddings.position_embedding.weight".into(),
        vec![TEXT_POSITIONS, h],
        0.0,
        0.02,
    );
    b.clip_layers("text_model", d.text_layers, h, d.text_ffn);
    b.norm("text_model.final_layer_norm", h);
    b.specs
}

/// CLIPVisionModelWithProjection (the ViT-H/14 image encoder).
pub fn image_encoder(d: &Dims) -> Vec<Spec> {
    let mut b = Builder::default();
    b.clip_vision(
        "vision_model",
        d.vision_hidden,
        d.vision_layers,
        d.vision_ffn,
        d.num_positions(),
    );
    b.linear("visual_projection", d.vision_hidden, d.vision_proj, false);
    b.specs
}

/// StableDiffusionSafetyChecker: a CLIPVisionModel, its projection, concepts and thresholds.
pub fn safety_checker(d: &Dims) -> Vec<Spec> {
    let mut b = Builder::default();
    b.clip_vision(
        "vision_model.vision_model",
        d.safety_hidden,
        d.safety_layers,
        d.safety_ffn,
        d.num_positions(),
    );
    b.linear("visual_projection", d.safety_hidden, d.safety_proj, false);
    b.normal(
        "concept_embeds".into(),
        vec![CONCEPTS, d.safety_proj],
        0.0,
        1.0,
    );
    b.normal(
        "special_care_embeds".into(),
        vec![SPECIAL_CONCEPTS, d.safety_proj],
        0.0,
        1.0,
    );
    // Thresholds near the real ones (~0.2): random embeddings stay far below, nothing is flagged.
    b.normal("concept_embeds_weights".into(), vec![CONCEPTS], 0.2, 0.01);
    b.normal(
        "special_care_embeds_weights".into(),
        vec![SPECIAL_CONCEPTS],
        0.2,
        0.01,
    );
    b.specs
}

/// One attention layer of the UNet as the adapter addresses it (`N` = diffusers'
/// `unet.attn_processors` order).
pub struct AdapterSite {
    pub index: usize,
    pub hidden: usize,
    pub context: usize,
    pub cross: bool,
}

/// ip-adapter-faceid-plusv2_sd15 with h94's keys, flattened the way diffusers' and our
/// `.safetensors` readers take it: `image_proj.*` (ProjPlusModel) and `ip_adapter.*`.
pub fn ip_adapter(d: &Dims, sites: &[AdapterSite]) -> Vec<Spec> {
    let mut b = Builder::default();
    let c = d.cross_dim;
    let inner = PERCEIVER_DIM_HEAD * (c / PERCEIVER_DIM_HEAD);
    b.linear("image_proj.proj.0", ID_DIM, 2 * ID_DIM, true);
    b.linear("image_proj.proj.2", 2 * ID_DIM, c * NUM_ID_TOKENS, true);
    b.norm("image_proj.norm", c);
    let r = "image_proj.perceiver_resampler";
    b.linear(&format!("{r}.proj_in"), d.vision_hidden, c, true);
    b.linear(&format!("{r}.proj_out"), c, c, true);
    b.norm(&format!("{r}.norm_out"), c);
    for l in 0..PERCEIVER_DEPTH {
        let a = format!("{r}.layers.{l}.0");
        b.norm(&format!("{a}.norm1"), c);
        b.norm(&format!("{a}.norm2"), c);
        b.linear(&format!("{a}.to_q"), c, inner, false);
        b.linear(&format!("{a}.to_kv"), c, 2 * inner, false);
        b.linear(&format!("{a}.to_out"), inner, c, false);
        let f = format!("{r}.layers.{l}.1");
        b.norm(&format!("{f}.0"), c);
        b.linear(&format!("{f}.1"), c, 4 * c, false);
        b.linear(&format!("{f}.3"), 4 * c, c, false);
    }
    let rank = d.lora_rank;
    for s in sites {
        let n = s.index;
        for (proj, input) in [
            ("to_q", s.hidden),
            ("to_k", s.context),
            ("to_v", s.context),
            ("to_out", s.hidden),
        ] {
            // Large enough that up @ down compares with the base weight (as in gen_models).
            let p = format!("ip_adapter.{n}.{proj}_lora");
            b.normal(
                format!("{p}.down.weight"),
                vec![rank, input],
                0.0,
                (input as f64).powf(-0.5),
            );
            b.normal(
                format!("{p}.up.weight"),
                vec![s.hidden, rank],
                0.0,
                0.4 * (rank as f64).powf(-0.5),
            );
        }
        if s.cross {
            for proj in ["to_k_ip", "to_v_ip"] {
                b.normal(
                    format!("ip_adapter.{n}.{proj}.weight"),
                    vec![s.hidden, c],
                    0.0,
                    (c as f64).powf(-0.5),
                );
            }
        }
    }
    b.specs
}

pub fn parameter_count(specs: &[Spec]) -> usize {
    specs.iter().map(Spec::numel).sum()
}
