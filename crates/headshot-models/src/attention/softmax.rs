//! Row softmax on the vectorised `exp` of `fast_math`.

use crate::fast_math::{exp, with_best_simd};

/// Lanes per step: one AVX-512 register or two AVX2 ones, independent chains hide latency.
const LANES: usize = 16;

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    let tail = chunks.remainder().iter().copied();
    lanes
        .into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `row <- exp(row - max(row))`, returning the sum.
#[inline(always)]
fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *x = exp(*x - max);
            *lane += *x;
        }
    }
    let mut tail_sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        tail_sum += *x;
    }
    lanes.iter().sum::<f32>() + tail_sum
}

#[inline(always)]
fn softmax_rows_portable(scores: &mut [f32], row_len: usize) {
    for row in scores.chunks_exact_mut(row_len) {
        let max = row_max(row);
        let inv_sum = 1.0 / exp_shifted_sum(row, max);
        for x in row.iter_mut() {
            *x *= inv_sum;
        }
    }
}

/// Softmax over each `row_len` row of `scores`, in place.
pub(super) fn softmax_rows(scores: &mut [f32], row_len: usize) {
    if row_len == 0 {
        return;
    }
    with_best_simd!(run(scores: &mut [f32], row_len: usize) {
        softmax_rows_portable(scores, row_len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_match_the_textbook_softmax() {
        let row_len = 37;
        let mut scores: Vec<f32> = (0..row_len * 3)
            .map(|i| ((i * 7919) % 101) as f32 / 9.0 - 5.0)
            .collect();
        let expected: Vec<f32> = scores
            .chunks(row_len)
            .flat_map(|row| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
                row.iter()
                    .map(move |&x| (((x - max) as f64).exp() / sum) as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        softmax_rows(&mut scores, row_len);
        for (a, b) in scores.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        for row in scores.chunks(row_len) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn vector_and_portable_paths_give_the_same_bits() {
        let row_len = 53;
        let input: Vec<f32> = (0..row_len * 4)
            .map(|i| ((i * 104_729) % 997) as f32 / 37.0 - 13.0)
            .collect();
        let mut dispatched = input.clone();
        softmax_rows(&mut dispatched, row_len);
        let mut portable = input;
        softmax_rows_portable(&mut portable, row_len);
        assert_eq!(dispatched, portable);
    }
}
