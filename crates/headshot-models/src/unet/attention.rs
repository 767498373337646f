//! Transformer2DModel with self-attention, (decoupled) cross-attention and a GEGLU feed-forward.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use super::resnet::conv;
use crate::conv::Conv2d;
use crate::group_norm::GroupNorm;
use crate::ip_adapter::{AttentionAdapterLayer, LayerLora, LoraPair};

/// Cross-attention context, split once per UNet call.
#[derive(Debug, Clone)]
pub struct CrossContext {
    /// Text tokens `[B, S, cross_dim]` (the whole context for a plain UNet).
    pub text: Tensor,
    /// IP-Adapter tokens `[B, n, cross_dim]` and the adapter weight `scale`.
    pub ip: Option<(Tensor, f64)>,
}

/// Where the adapter layers are looked up while the UNet is built.
pub(crate) struct AdapterLookup<'a> {
    pub root_prefix: String,
    pub layers: &'a std::collections::HashMap<String, AttentionAdapterLayer>,
    pub used: std::cell::Cell<usize>,
}

impl AdapterLookup<'_> {
    fn layer(&self, vb: &VarBuilder) -> Option<&AttentionAdapterLayer> {
        let full = vb.prefix();
        let rel = if self.root_prefix.is_empty() {
            full.as_str()
        } else {
            full.strip_prefix(&self.root_prefix)?.strip_prefix('.')?
        };
        let layer = self.layers.get(rel);
        if layer.is_some() {
            self.used.set(self.used.get() + 1);
        }
        layer
    }
}

/// Loads `{name}.weight` (+ bias) and adds the adapter's LoRA `up @ down` once, in f32.
fn fused_linear(
    vb: &VarBuilder,
    name: &str,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    lora: Option<&LoraPair>,
) -> Result<Linear> {
    let vb = vb.pp(name);
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let weight = match lora {
        None => weight,
        Some(pair) => {
            let device = weight.device();
            let up = pair.up.to_device(device)?.to_dtype(DType::F32)?;
            let down = pair.down.to_device(device)?.to_dtype(DType::F32)?;
            let delta = up.matmul(&down)?;
            (weight.to_dtype(DType::F32)? + delta)?.to_dtype(vb.dtype())?
        }
    };
    let bias = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

fn ip_linear(weight: &Tensor, vb: &VarBuilder) -> Result<Linear> {
    Ok(Linear::new(
        weight.to_device(vb.device())?.to_dtype(vb.dtype())?,
        None,
    ))
}

/// diffusers `Attention` (no biases on q/k/v, bias on `to_out.0`), optionally with the
/// IP-Adapter's `to_k_ip` / `to_v_ip` for decoupled cross-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    ip: Option<(Linear, Linear)>,
    heads: usize,
    head_dim: usize,
    upcast: bool,
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        upcast: bool,
        adapter: Option<&AdapterLookup>,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let layer = adapter.and_then(|a| a.layer(&vb));
        let layer_lora = layer.and_then(|l| l.lora.as_ref());
        let lora = |f: fn(&LayerLora) -> &LoraPair| layer_lora.map(f);
        let ip = match layer.and_then(|l| l.ip.as_ref()) {
            Some(ip) => Some((ip_linear(&ip.to_k_ip, &vb)?, ip_linear(&ip.to_v_ip, &vb)?)),
            None => None,
        };
        Ok(Self {
            to_q: fused_linear(&vb, "to_q", query_dim, inner, false, lora(|l| &l.to_q))?,
            to_k: fused_linear(&vb, "to_k", context_dim, inner, false, lora(|l| &l.to_k))?,
            to_v: fused_linear(&vb, "to_v", context_dim, inner, false, lora(|l| &l.to_v))?,
            to_out: fused_linear(
                &vb.pp("to_out"),
                "0",
                inner,
                query_dim,
                true,
                lora(|l| &l.to_out),
            )?,
            ip,
            heads,
            head_dim,
            upcast,
        })
    }

    /// `[B, L, heads*d]` -> `[B*heads, L, d]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b * self.heads, l, self.head_dim))
    }

    /// `[B*heads, L, d]` -> `[B, L, heads*d]`.
    fn merge_heads(&self, x: &Tensor, batch: usize) -> Result<Tensor> {
        let (_, l, d) = x.dims3()?;
        x.reshape((batch, self.heads, l, d))?
            .transpose(1, 2)?
            .reshape((batch, l, self.heads * d))
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let scale = (self.head_dim as f64).powf(-0.5);
        crate::attention::scaled_dot_product(q, k, v, scale, self.upcast)
    }

    /// Heads of `context` projected by `to_k`/`to_v` (or the IP projections).
    fn keys_values(&self, k: &Linear, v: &Linear, context: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&k.forward(context)?)?,
            self.split_heads(&v.forward(context)?)?,
        ))
    }

    /// Self-attention when `context` is `None`.
    pub fn forward(&self, x: &Tensor, context: Option<&CrossContext>) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let q = self.split_heads(&self.to_q.forward(x)?)?.contiguous()?;
        let text = context.map(|c| &c.text).unwrap_or(x);
        let (k, v) = self.keys_values(&self.to_k, &self.to_v, text)?;
        let mut z = self.attend(&q, &k, &v)?;
        if let (Some((k_ip, v_ip)), Some((tokens, scale))) =
            (&self.ip, context.and_then(|c| c.ip.as_ref()))
        {
            let (k, v) = self.keys_values(k_ip, v_ip, tokens)?;
            z = (z + (self.attend(&q, &k, &v)? * *scale)?)?;
        }
        self.to_out.forward(&self.merge_heads(&z, batch)?)
    }
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`), exact-erf GELU on the gate half.
#[derive(Debug, Clone)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
    inner: usize,
}

impl FeedForward {
    fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: linear(dim, inner * 2, vb.pp("net.0.proj"))?,
            proj_out: linear(inner, dim, vb.pp("net.2"))?,
            inner,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj_in.forward(x)?;
        let hidden = h.narrow(D::Minus1, 0, self.inner)?;
        let gate = h.narrow(D::Minus1, self.inner, self.inner)?.gelu_erf()?;
        self.proj_out.forward(&(hidden * gate)?)
    }
}

/// `BasicTransformerBlock`: pre-LayerNorm self-attention, cross-attention, feed-forward.
#[derive(Debug, Clone)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(
        vb: VarBuilder,
        dim: usize,
        cross_dim: usize,
        heads: usize,
        upcast: bool,
        adapter: Option<&AdapterLookup>,
    ) -> Result<Self> {
        let head_dim = dim / heads;
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::load(vb.pp("attn1"), dim, dim, heads, head_dim, upcast, adapter)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::load(
                vb.pp("attn2"),
                dim,
                cross_dim,
                heads,
                head_dim,
                upcast,
                adapter,
            )?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::load(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &CrossContext) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// `Transformer2DModel` (continuous input): GroupNorm, proj_in, transformer blocks, proj_out,
/// residual.
#[derive(Debug, Clone)]
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

pub(crate) struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
    pub upcast: bool,
}

impl Transformer2D {
    pub(crate) fn load(
        vb: VarBuilder,
        spec: &TransformerSpec,
        adapter: Option<&AdapterLookup>,
    ) -> Result<Self> {
        let c = spec.channels;
        let projection = |vb: VarBuilder| -> Result<Projection> {
            Ok(if spec.linear_projection {
                Projection::Linear(linear(c, c, vb)?)
            } else {
                Projection::Conv(conv(vb, c, c, 1, 1, 0)?)
            })
        };
        let blocks = (0..spec.layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    vb.pp(format!("transformer_blocks.{i}")),
                    c,
                    spec.cross_dim,
                    spec.heads,
                    spec.upcast,
                    adapter,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            // diffusers fixes this GroupNorm's eps at 1e-6.
            norm: GroupNorm::load(vb.pp("norm"), spec.groups, c, 1e-6)?,
            proj_in: projection(vb.pp("proj_in"))?,
            blocks,
            proj_out: projection(vb.pp("proj_out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &CrossContext) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens =
            |t: &Tensor| -> Result<Tensor> { t.permute((0, 2, 3, 1))?.reshape((b, h * w, c)) };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_map =
            |t: &Tensor| -> Result<Tensor> { t.reshape((b, h, w, c))?.permute((0, 3, 1, 2)) };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?.contiguous()?)?,
            Projection::Linear(lin) => to_map(&lin.forward(&tokens)?)?,
        };
        out + x
    }
}
