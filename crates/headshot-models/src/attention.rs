//! `softmax(q kᵀ · scale) v` for the UNet and the VAE.
//!
//! On the CPU (f32) the whole thing is one fused kernel: query rows are taken in blocks whose
//! score rows fit a core's L2 cache, the scores are made by `gemm`, turned into
//! probabilities in place with a vectorised `exp`, and multiplied by `v` straight into the
//! output. The naive op chain writes and re-reads the full `[N, Lq, Lk]` score tensor several
//! times (half a GiB per self-attention at 64x64 latents) and spends most of a UNet step on
//! page faults and scalar `expf`. On CUDA with the `flash-attn` feature, f16/bf16 attention
//! runs on flash-attention v2; otherwise other devices use candle ops over query slices.

mod cpu_kernel;
mod softmax;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use crate::cpu_storage::contiguous_f32;

/// Largest score matrix the op-chain path materialises at once (elements): 64x64 latents give
/// 4096x4096 scores per head, over 1 GiB for a CFG batch in f32.
const MAX_SCORE_ELEMENTS: usize = 1 << 25;

/// `softmax(q kᵀ · scale) v` for `q: [N, Lq, d]`, `k: [N, Lk, d]`, `v: [N, Lk, dv]`.
///
/// With `upcast`, non-f32 inputs are computed in f32 (diffusers' `upcast_attention` /
/// `upcast_softmax`); the CPU always computes in f32.
pub fn scaled_dot_product(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
) -> Result<Tensor> {
    let dtype = q.dtype();
    if matches!(q.device(), Device::Cpu) {
        let f32_input = |t: &Tensor| t.to_dtype(DType::F32)?.contiguous();
        let out = f32_input(q)?.apply_op3_no_bwd(
            &f32_input(k)?,
            &f32_input(v)?,
            &FusedCpuAttention {
                scale: scale as f32,
            },
        )?;
        return out.to_dtype(dtype);
    }
    #[cfg(feature = "flash-attn")]
    if flash_attention_fits(q, k, v) {
        return flash_attention(q, k, v, scale);
    }
    attend_with_candle_ops(q, k, v, scale, upcast)
}

/// The path of every device but the CPU (CUDA without flash-attn, f32 on CUDA, Metal): candle
/// ops over query slices, in f32 when `upcast`. Public so that the CPU tests run it too.
pub fn attend_with_candle_ops(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
) -> Result<Tensor> {
    let dtype = q.dtype();
    if upcast && dtype != DType::F32 {
        let f32_input = |t: &Tensor| t.to_dtype(DType::F32);
        return attend_in_query_slices(&f32_input(q)?, &f32_input(k)?, &f32_input(v)?, scale)?
            .to_dtype(dtype);
    }
    attend_in_query_slices(q, k, v, scale)
}

/// flash-attn v2 takes f16/bf16 CUDA tensors with one head size for q, k and v that is a
/// multiple of 8 up to 256 (SD1.5: 40, 80, 160; its VAE's 512-wide head takes the op path).
/// It computes the softmax in f32, so `upcast` holds there too.
#[cfg(feature = "flash-attn")]
fn flash_attention_fits(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let head_dim = q.dims().last().copied().unwrap_or(0);
    q.device().is_cuda()
        && matches!(q.dtype(), DType::F16 | DType::BF16)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && v.dims().last() == Some(&head_dim)
        && head_dim % 8 == 0
        && (8..=256).contains(&head_dim)
}

/// `[N, L, d]` tensors as flash-attn's `[batch, seq, heads, d]` with one head per row of `N`.
#[cfg(feature = "flash-attn")]
fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let as_single_head = |t: &Tensor| t.unsqueeze(2)?.contiguous();
    candle_flash_attn::flash_attn(
        &as_single_head(q)?,
        &as_single_head(k)?,
        &as_single_head(v)?,
        scale as f32,
        false,
    )?
    .squeeze(2)
}

/// The candle-ops path: `q` scaled first, scores materialised for a slice of queries at a time.
pub fn attend_in_query_slices(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    attend_in_slices_of(q, k, v, scale, MAX_SCORE_ELEMENTS)
}

/// [`attend_in_query_slices`] with at most `max_score_elements` scores at once.
fn attend_in_slices_of(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    max_score_elements: usize,
) -> Result<Tensor> {
    let q = (q * scale)?;
    let (batch_heads, queries, _) = q.dims3()?;
    let keys = k.dim(1)?;
    let k_t = k.t()?;
    let per_query = (batch_heads * keys).max(1);
    let chunk = (max_score_elements / per_query).clamp(1, queries.max(1));
    if chunk >= queries {
        return candle_nn::ops::softmax_last_dim(&q.matmul(&k_t)?)?.matmul(v);
    }
    let mut outputs = Vec::with_capacity(queries.div_ceil(chunk));
    for start in (0..queries).step_by(chunk) {
        let len = chunk.min(queries - start);
        let scores = q.narrow(1, start, len)?.matmul(&k_t)?;
        outputs.push(candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)?);
    }
    Tensor::cat(&outputs, 1)
}

struct FusedCpuAttention {
    scale: f32,
}

impl CustomOp3 for FusedCpuAttention {
    fn name(&self) -> &'static str {
        "fused-cpu-attention"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, lq, d) = q_layout.shape().dims3()?;
        let (kn, lk, kd) = k_layout.shape().dims3()?;
        let (vn, vk, dv) = v_layout.shape().dims3()?;
        if kn != n || vn != n || kd != d || vk != lk {
            candle_core::bail!(
                "fused attention: shapes do not line up: q {:?}, k {:?}, v {:?}",
                q_layout.shape(),
                k_layout.shape(),
                v_layout.shape()
            );
        }
        let dims = cpu_kernel::Dims {
            heads: n,
            queries: lq,
            keys: lk,
            head_dim: d,
            value_dim: dv,
        };
        let out = cpu_kernel::attention(
            contiguous_f32(q_storage, q_layout, "fused attention", "q")?,
            contiguous_f32(k_storage, k_layout, "fused attention", "k")?,
            contiguous_f32(v_storage, v_layout, "fused attention", "v")?,
            dims,
            self.scale,
        );
        Ok((CpuStorage::F32(out), Shape::from((n, lq, dv))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::{max_abs_diff, uniform};

    fn random(shape: (usize, usize, usize), seed: u64) -> Tensor {
        uniform(&[shape.0, shape.1, shape.2], seed, -3.0, 6.0)
    }

    #[test]
    fn fused_kernel_matches_the_op_chain_over_awkward_shapes() {
        // Lengths that are not multiples of the block or vector widths, one key, many keys.
        for &(n, lq, lk, d, dv) in &[
            (1, 1, 1, 1, 1),
            (3, 37, 77, 8, 8),
            (2, 300, 4, 40, 40),
            (8, 1030, 1030, 4, 4),
            (1, 64, 9, 7, 13),
        ] {
            let q = random((n, lq, d), 1);
            let k = random((n, lk, d), 2);
            let v = random((n, lk, dv), 3);
            let scale = (d as f64).powf(-0.5);
            let fused = scaled_dot_product(&q, &k, &v, scale, false).unwrap();
            let reference = attend_in_query_slices(&q, &k, &v, scale).unwrap();
            assert_eq!(fused.dims(), &[n, lq, dv]);
            let diff = max_abs_diff(&fused, &reference);
            // Scores reach ~±60 here; the op chain scales q first, the kernel scales scores.
            assert!(diff < 1e-5, "{n}x{lq}x{lk}x{d}x{dv}: max abs diff {diff}");
        }
    }

    #[test]
    fn large_scores_do_not_overflow() {
        let q = (random((2, 50, 16), 4) * 40.0).unwrap();
        let k = (random((2, 60, 16), 5) * 40.0).unwrap();
        let v = random((2, 60, 16), 6);
        let fused = scaled_dot_product(&q, &k, &v, 1.0, false).unwrap();
        let reference = attend_in_query_slices(&q, &k, &v, 1.0).unwrap();
        let values: Vec<f32> = fused.flatten_all().unwrap().to_vec1().unwrap();
        assert!(values.iter().all(|x| x.is_finite()));
        assert!(max_abs_diff(&fused, &reference) < 1e-5);
    }

    #[test]
    fn non_contiguous_and_half_inputs_are_accepted() {
        let q = random((2, 16, 16), 7); // 16 queries of width 16 against 24 keys
        let k = random((2, 16, 24), 8).transpose(1, 2).unwrap(); // [2, 24, 16], strided
        let v = random((2, 24, 5), 9);
        let fused = scaled_dot_product(&q, &k, &v, 0.25, false).unwrap();
        let reference = attend_in_query_slices(&q, &k.contiguous().unwrap(), &v, 0.25).unwrap();
        assert!(max_abs_diff(&fused, &reference) < 2e-6);

        let half = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let out = scaled_dot_product(&half(&q), &half(&k), &half(&v), 0.25, true).unwrap();
        assert_eq!(out.dtype(), DType::BF16);
    }

    /// The GPU path's slicing: scores for a few queries at a time give the same result as all
    /// at once, for slice sizes that do and do not divide the query count.
    #[test]
    fn query_slices_match_one_score_matrix() {
        let (n, lq, lk, d) = (3, 70, 33, 8);
        let q = random((n, lq, d), 10);
        let k = random((n, lk, d), 11);
        let v = random((n, lk, d), 12);
        let whole = attend_in_slices_of(&q, &k, &v, 0.3, usize::MAX).unwrap();
        for queries_per_slice in [1, 7, 32, 69] {
            let sliced = attend_in_slices_of(&q, &k, &v, 0.3, queries_per_slice * n * lk).unwrap();
            assert_eq!(sliced.dims(), &[n, lq, d]);
            let diff = max_abs_diff(&sliced, &whole);
            // gemm may sum a short slice in another order than the whole matrix: f32 rounding.
            assert!(diff < 1e-5, "{queries_per_slice} queries per slice: {diff}");
        }
    }

    /// The GPU path in half precision: with `upcast` (diffusers' `upcast_attention`) the result
    /// is the f32 one rounded once; without it, the scores themselves are half precision.
    #[test]
    fn half_precision_path_upcasts_when_asked() {
        let (q, k, v) = (
            random((2, 40, 16), 13),
            random((2, 50, 16), 14),
            random((2, 50, 16), 15),
        );
        let reference = attend_in_query_slices(&q, &k, &v, 0.25).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let cast = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let upcast =
                attend_with_candle_ops(&cast(&q), &cast(&k), &cast(&v), 0.25, true).unwrap();
            let plain =
                attend_with_candle_ops(&cast(&q), &cast(&k), &cast(&v), 0.25, false).unwrap();
            assert_eq!((upcast.dtype(), plain.dtype()), (dtype, dtype));
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            // Inputs rounded to the half type, output rounded once: a few ulps of values ~3.
            let ulp = if dtype == DType::F16 { 2e-3 } else { 1.6e-2 };
            let upcast_diff = max_abs_diff(&f32_of(&upcast), &reference);
            let plain_diff = max_abs_diff(&f32_of(&plain), &reference);
            assert!(upcast_diff < 8.0 * ulp, "{dtype:?} upcast: {upcast_diff}");
            assert!(plain_diff < 32.0 * ulp, "{dtype:?} half: {plain_diff}");
            assert!(
                upcast_diff <= plain_diff,
                "{dtype:?}: {upcast_diff} > {plain_diff}"
            );
        }
    }
}
