//! Our (diffusers) tensor names -> the original LDM names, one name at a time: the inverse of
//! diffusers' `convert_ldm_unet_checkpoint` / `convert_ldm_vae_checkpoint` (single_file_utils.py),
//! so a model asking for `down_blocks.0.resnets.1.norm1.weight` is served
//! `input_blocks.2.0.in_layers.0.weight`. Names are relative to the part's prefix
//! (`model.diffusion_model.`, `first_stage_model.`).

/// The block structure the LDM indices depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnetLayout {
    /// Resnets per down block (diffusers' `layers_per_block`, expanded per block); each up block
    /// has one more, in reverse order.
    pub layers_per_block: Vec<usize>,
}

impl UnetLayout {
    /// `input_blocks` index of down block `b`'s layer `j` (j = layers is its downsampler): index 0
    /// is `conv_in`, then each block takes `layers + 1` slots.
    fn input_block(&self, b: usize, j: usize) -> usize {
        1 + self.layers_per_block[..b]
            .iter()
            .map(|l| l + 1)
            .sum::<usize>()
            + j
    }

    /// Resnets of up block `b` (the down block it mirrors, plus one).
    fn up_layers(&self, b: usize) -> Option<usize> {
        let n = self.layers_per_block.len();
        Some(self.layers_per_block.get(n.checked_sub(b + 1)?)? + 1)
    }

    /// `output_blocks` index of up block `b`'s layer `j`.
    fn output_block(&self, b: usize, j: usize) -> Option<usize> {
        let before: Option<usize> = (0..b).map(|k| self.up_layers(k)).sum();
        Some(before? + j)
    }
}

fn num(s: &str) -> Option<usize> {
    s.parse().ok()
}

fn join(parts: &[&str]) -> String {
    parts.join(".")
}

/// A UNet resnet's sub-module: diffusers' names -> `ResBlock`'s Sequential indices.
fn unet_resnet(rest: &[&str]) -> Option<String> {
    let (first, tail) = rest.split_first()?;
    let ldm = match *first {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "time_emb_proj" => "emb_layers.1",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "conv_shortcut" => "skip_connection",
        _ => return None,
    };
    Some(format!("{ldm}.{}", join(tail)))
}

/// The LDM names a UNet tensor may have: one, except an up block's upsampler, which sits at
/// slot 1 of its last layer without attentions and at slot 2 with them (the caller takes
/// whichever the file holds).
pub fn unet_ldm_names(name: &str, layout: &UnetLayout) -> Vec<String> {
    unet_ldm_names_opt(name, layout).unwrap_or_default()
}

fn unet_ldm_names_opt(name: &str, layout: &UnetLayout) -> Option<Vec<String>> {
    let segs: Vec<&str> = name.split('.').collect();
    let one = |s: String| Some(vec![s]);
    match segs.as_slice() {
        ["time_embedding", "linear_1", leaf] => one(format!("time_embed.0.{leaf}")),
        ["time_embedding", "linear_2", leaf] => one(format!("time_embed.2.{leaf}")),
        ["conv_in", leaf] => one(format!("input_blocks.0.0.{leaf}")),
        ["conv_norm_out", leaf] => one(format!("out.0.{leaf}")),
        ["conv_out", leaf] => one(format!("out.2.{leaf}")),
        ["down_blocks", b, "resnets", j, rest @ ..] => {
            let i = layout.input_block(
                num(b).filter(|b| *b < layout.layers_per_block.len())?,
                num(j)?,
            );
            one(format!("input_blocks.{i}.0.{}", unet_resnet(rest)?))
        }
        ["down_blocks", b, "attentions", j, rest @ ..] if !rest.is_empty() => {
            let i = layout.input_block(
                num(b).filter(|b| *b < layout.layers_per_block.len())?,
                num(j)?,
            );
            one(format!("input_blocks.{i}.1.{}", join(rest)))
        }
        ["down_blocks", b, "downsamplers", "0", "conv", leaf] => {
            let b = num(b).filter(|b| *b < layout.layers_per_block.len())?;
            let i = layout.input_block(b, layout.layers_per_block[b]);
            one(format!("input_blocks.{i}.0.op.{leaf}"))
        }
        ["mid_block", "resnets", k, rest @ ..] => {
            let k = num(k).filter(|k| *k < 2)?;
            one(format!("middle_block.{}.{}", 2 * k, unet_resnet(rest)?))
        }
        ["mid_block", "attentions", "0", rest @ ..] if !rest.is_empty() => {
            one(format!("middle_block.1.{}", join(rest)))
        }
        ["up_blocks", b, "resnets", j, rest @ ..] => {
            let i = layout.output_block(num(b)?, num(j)?)?;
            one(format!("output_blocks.{i}.0.{}", unet_resnet(rest)?))
        }
        ["up_blocks", b, "attentions", j, rest @ ..] if !rest.is_empty() => {
            let i = layout.output_block(num(b)?, num(j)?)?;
            one(format!("output_blocks.{i}.1.{}", join(rest)))
        }
        ["up_blocks", b, "upsamplers", "0", "conv", leaf] => {
            let b = num(b)?;
            let i = layout.output_block(b, layout.up_layers(b)? - 1)?;
            Some(vec![
                format!("output_blocks.{i}.1.conv.{leaf}"),
                format!("output_blocks.{i}.2.conv.{leaf}"),
            ])
        }
        _ => None,
    }
}

/// A VAE resnet: the same names, except the shortcut.
fn vae_resnet(rest: &[&str]) -> String {
    match rest.split_first() {
        Some((&"conv_shortcut", tail)) => format!("nin_shortcut.{}", join(tail)),
        _ => join(rest),
    }
}

/// The VAE's mid-block attention: diffusers' linear layers (also their legacy names) -> LDM's
/// `AttnBlock` (1x1 convs, reshaped by the loader).
fn vae_attention(rest: &[&str]) -> Option<String> {
    let (module, leaf) = match rest {
        [m, "0", leaf] if *m == "to_out" => ("proj_out", *leaf),
        [m, leaf] => (
            match *m {
                "group_norm" => "norm",
                "to_q" | "query" => "q",
                "to_k" | "key" => "k",
                "to_v" | "value" => "v",
                "proj_attn" => "proj_out",
                _ => return None,
            },
            *leaf,
        ),
        _ => return None,
    };
    Some(format!("{module}.{leaf}"))
}

/// The LDM name of a VAE tensor; `up_blocks` is the number of decoder up blocks (LDM numbers
/// them from the lowest resolution up, diffusers from the latent side).
pub fn vae_ldm_name(name: &str, up_blocks: usize) -> Option<String> {
    let segs: Vec<&str> = name.split('.').collect();
    let up = |i: &str| up_blocks.checked_sub(num(i)? + 1);
    match segs.as_slice() {
        [part @ ("encoder" | "decoder"), "conv_norm_out", leaf] => {
            Some(format!("{part}.norm_out.{leaf}"))
        }
        ["encoder" | "decoder", "conv_in" | "conv_out", _]
        | ["quant_conv" | "post_quant_conv", _] => Some(name.to_string()),
        ["encoder", "down_blocks", i, "resnets", j, rest @ ..] if !rest.is_empty() => {
            Some(format!("encoder.down.{i}.block.{j}.{}", vae_resnet(rest)))
        }
        ["encoder", "down_blocks", i, "downsamplers", "0", "conv", leaf] => {
            Some(format!("encoder.down.{i}.downsample.conv.{leaf}"))
        }
        [part @ ("encoder" | "decoder"), "mid_block", "resnets", k, rest @ ..]
            if !rest.is_empty() =>
        {
            Some(format!(
                "{part}.mid.block_{}.{}",
                num(k)? + 1,
                vae_resnet(rest)
            ))
        }
        [part @ ("encoder" | "decoder"), "mid_block", "attentions", "0", rest @ ..] => {
            Some(format!("{part}.mid.attn_1.{}", vae_attention(rest)?))
        }
        ["decoder", "up_blocks", i, "resnets", j, rest @ ..] if !rest.is_empty() => Some(format!(
            "decoder.up.{}.block.{j}.{}",
            up(i)?,
            vae_resnet(rest)
        )),
        ["decoder", "up_blocks", i, "upsamplers", "0", "conv", leaf] => {
            Some(format!("decoder.up.{}.upsample.conv.{leaf}", up(i)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> UnetLayout {
        UnetLayout {
            layers_per_block: vec![2; 4],
        }
    }

    #[test]
    fn unet_names_follow_the_ldm_block_numbering() {
        let l = sd15();
        for (ours, ldm) in [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("time_embedding.linear_2.bias", "time_embed.2.bias"),
            (
                "down_blocks.0.resnets.1.norm1.weight",
                "input_blocks.2.0.in_layers.0.weight",
            ),
            (
                "down_blocks.1.attentions.0.proj_in.weight",
                "input_blocks.4.1.proj_in.weight",
            ),
            (
                "down_blocks.2.downsamplers.0.conv.bias",
                "input_blocks.9.0.op.bias",
            ),
            (
                "down_blocks.1.resnets.0.conv_shortcut.weight",
                "input_blocks.4.0.skip_connection.weight",
            ),
            (
                "mid_block.resnets.1.time_emb_proj.weight",
                "middle_block.2.emb_layers.1.weight",
            ),
            (
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "up_blocks.3.resnets.2.conv2.weight",
                "output_blocks.11.0.out_layers.3.weight",
            ),
            (
                "up_blocks.1.attentions.2.norm.bias",
                "output_blocks.5.1.norm.bias",
            ),
            ("conv_out.bias", "out.2.bias"),
        ] {
            assert_eq!(unet_ldm_names(ours, &l), vec![ldm.to_string()], "{ours}");
        }
        assert_eq!(
            unet_ldm_names("up_blocks.0.upsamplers.0.conv.weight", &l),
            [
                "output_blocks.2.1.conv.weight",
                "output_blocks.2.2.conv.weight"
            ]
        );
        assert!(unet_ldm_names("down_blocks.4.resnets.0.norm1.weight", &l).is_empty());
        assert!(unet_ldm_names("add_embedding.linear_1.weight", &l).is_empty());
    }

    #[test]
    fn per_block_layer_counts_shift_the_indices() {
        let l = UnetLayout {
            layers_per_block: vec![1, 2],
        };
        assert_eq!(
            unet_ldm_names("down_blocks.1.resnets.0.norm1.weight", &l),
            ["input_blocks.3.0.in_layers.0.weight"]
        );
        // Up block 0 mirrors down block 1 (3 resnets), up block 1 starts at 3.
        assert_eq!(
            unet_ldm_names("up_blocks.1.resnets.0.norm1.weight", &l),
            ["output_blocks.3.0.in_layers.0.weight"]
        );
    }

    #[test]
    fn vae_names_reverse_the_decoder_blocks_and_rename_attention() {
        for (ours, ldm) in [
            ("decoder.conv_norm_out.weight", "decoder.norm_out.weight"),
            ("post_quant_conv.bias", "post_quant_conv.bias"),
            (
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                "decoder.up.3.block.2.conv1.weight",
            ),
            (
                "decoder.up_blocks.2.resnets.0.conv_shortcut.bias",
                "decoder.up.1.block.0.nin_shortcut.bias",
            ),
            (
                "decoder.up_blocks.1.upsamplers.0.conv.weight",
                "decoder.up.2.upsample.conv.weight",
            ),
            (
                "decoder.mid_block.resnets.0.norm2.bias",
                "decoder.mid.block_1.norm2.bias",
            ),
            (
                "decoder.mid_block.attentions.0.group_norm.weight",
                "decoder.mid.attn_1.norm.weight",
            ),
            (
                "decoder.mid_block.attentions.0.to_out.0.weight",
                "decoder.mid.attn_1.proj_out.weight",
            ),
            (
                "decoder.mid_block.attentions.0.query.bias",
                "decoder.mid.attn_1.q.bias",
            ),
            (
                "encoder.down_blocks.1.downsamplers.0.conv.weight",
                "encoder.down.1.downsample.conv.weight",
            ),
        ] {
            assert_eq!(vae_ldm_name(ours, 4).as_deref(), Some(ldm), "{ours}");
        }
        assert_eq!(
            vae_ldm_name("decoder.up_blocks.4.resnets.0.conv1.weight", 4),
            None
        );
    }
}
