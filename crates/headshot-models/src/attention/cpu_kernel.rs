//! The fused CPU attention kernel over plain slices.

use std::cell::RefCell;

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::softmax::softmax_rows;

/// Shapes of one call: `q: [heads, queries, head_dim]`, `k: [heads, keys, head_dim]`,
/// `v: [heads, keys, value_dim]`, all contiguous.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub value_dim: usize,
}

/// Bytes of score rows one block may hold. Each block's `gemm` packs all of `k` again, so
/// blocks are as tall as a per-core L2 (1-2 MiB on current server cores) allows: at 64x64
/// latents 16-row blocks were 35% slower than 128-row ones at SD1.5's head size.
const SCORE_BLOCK_BYTES: usize = 2 * 1024 * 1024;

thread_local! {
    /// Score rows of the block a worker thread is on; reused so no block allocates.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn rows_per_block(keys: usize) -> usize {
    (SCORE_BLOCK_BYTES / (keys.max(1) * std::mem::size_of::<f32>())).clamp(4, 128)
}

/// `softmax(q kᵀ · scale) v`, `[heads, queries, value_dim]`, blocks of query rows in parallel.
pub(super) fn attention(q: &[f32], k: &[f32], v: &[f32], dims: Dims, scale: f32) -> Vec<f32> {
    let Dims {
        heads,
        queries,
        keys,
        head_dim,
        value_dim,
    } = dims;
    debug_assert_eq!(q.len(), heads * queries * head_dim);
    debug_assert_eq!(k.len(), heads * keys * head_dim);
    debug_assert_eq!(v.len(), heads * keys * value_dim);
    let mut out = vec![0f32; heads * queries * value_dim];
    if out.is_empty() {
        return out;
    }
    if keys == 0 {
        // softmax over nothing: torch gives NaN rows; say so instead of reading past the end.
        out.fill(f32::NAN);
        return out;
    }
    let block = rows_per_block(keys);
    out.par_chunks_mut(queries * value_dim)
        .enumerate()
        .for_each(|(head, head_out)| {
            let head_q = &q[head * queries * head_dim..(head + 1) * queries * head_dim];
            let head_k = &k[head * keys * head_dim..(head + 1) * keys * head_dim];
            let head_v = &v[head * keys * value_dim..(head + 1) * keys * value_dim];
            head_out
                .par_chunks_mut(block * value_dim)
                .enumerate()
                .for_each(|(index, block_out)| {
                    let first_row = index * block;
                    let rows = block_out.len() / value_dim;
                    let block_q = &head_q[first_row * head_dim..(first_row + rows) * head_dim];
                    attend_block(block_q, head_k, head_v, block_out, dims, scale);
                });
        });
    out
}

/// One block of query rows of one head: scores, softmax, times `v`, into `out`.
fn attend_block(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], dims: Dims, scale: f32) {
    let Dims {
        keys,
        head_dim,
        value_dim,
        ..
    } = dims;
    let rows = out.len() / value_dim;
    SCORES.with_borrow_mut(|scores| {
        scores.resize(rows * keys, 0.0);
        let scores = &mut scores[..rows * keys];
        // SAFETY: every pointer/stride pair below describes a matrix inside its slice:
        // q is [rows, head_dim], kᵀ is read from k [keys, head_dim] with swapped strides,
        // scores is [rows, keys], v is [keys, value_dim] and out is [rows, value_dim].
        unsafe {
            gemm(
                rows,
                keys,
                head_dim,
                scores.as_mut_ptr(),
                1,
                keys as isize,
                false,
                q.as_ptr(),
                1,
                head_dim as isize,
                k.as_ptr(),
                head_dim as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        softmax_rows(scores, keys);
        // SAFETY: as above.
        unsafe {
            gemm(
                rows,
                value_dim,
                keys,
                out.as_mut_ptr(),
                1,
                value_dim as isize,
                false,
                scores.as_ptr(),
                1,
                keys as isize,
                v.as_ptr(),
                1,
                value_dim as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    });
}
