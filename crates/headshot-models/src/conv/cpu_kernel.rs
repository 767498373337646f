//! The CPU convolution kernel over plain NCHW slices.

use std::cell::RefCell;

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Sizes of one convolution call (square padding and stride, no dilation or groups).
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// `(out_h, out_w)`, or `None` when the kernel does not fit the padded input.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        if self.stride == 0 {
            return None;
        }
        let padded_h = self.height + 2 * self.padding;
        let padded_w = self.width + 2 * self.padding;
        if padded_h < self.kernel_h || padded_w < self.kernel_w {
            return None;
        }
        Some((
            (padded_h - self.kernel_h) / self.stride + 1,
            (padded_w - self.kernel_w) / self.stride + 1,
        ))
    }

    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }
}

/// Bytes of patch matrix one tile may build: fits a per-core L2 with room for the weights' panel.
const PATCH_TILE_BYTES: usize = 512 * 1024;
/// Fewest output pixels per tile, so each `gemm` call has a useful width.
const MIN_TILE_PIXELS: usize = 64;

thread_local! {
    /// The patch matrix of the tile a worker thread is on; reused across tiles and calls.
    static PATCHES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The output, shared by tiles that each write their own pixel range of every channel.
#[derive(Clone, Copy)]
struct OutputPtr(*mut f32);
// SAFETY: tiles write disjoint ranges (see `conv2d`), and the buffer outlives the parallel loop.
unsafe impl Send for OutputPtr {}
unsafe impl Sync for OutputPtr {}

impl OutputPtr {
    /// # Safety
    /// `offset` must stay inside the output buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: upheld by the caller.
        unsafe { self.0.add(offset) }
    }
}

/// `[batch, out_channels, out_h, out_w]` = conv(x `[batch, in, h, w]`, weight `[out, in, kh, kw]`)
/// + bias `[out]`. `geometry.output_size()` must be `Some`.
pub(super) fn conv2d(x: &[f32], weight: &[f32], bias: &[f32], geometry: ConvGeometry) -> Vec<f32> {
    let (out_h, out_w) = geometry
        .output_size()
        .expect("conv2d geometry checked by the caller");
    let pixels = out_h * out_w;
    let out_channels = geometry.out_channels;
    debug_assert_eq!(
        x.len(),
        geometry.batch * geometry.in_channels * geometry.height * geometry.width
    );
    debug_assert_eq!(weight.len(), out_channels * geometry.patch_len());
    debug_assert_eq!(bias.len(), out_channels);
    let mut out = vec![0f32; geometry.batch * out_channels * pixels];
    if out.is_empty() {
        return out;
    }
    let tile = tile_pixels(geometry, pixels);
    let tiles_per_image = pixels.div_ceil(tile);
    let output = OutputPtr(out.as_mut_ptr());
    (0..geometry.batch * tiles_per_image)
        .into_par_iter()
        .for_each(|task| {
            let image = task / tiles_per_image;
            let first = (task % tiles_per_image) * tile;
            let len = tile.min(pixels - first);
            // SAFETY: this task alone writes pixels first..first+len of each output channel of
            // `image`; rows of `pixels` floats at offset image*out_channels*pixels stay in `out`.
            let dst = unsafe { output.at(image * out_channels * pixels + first) };
            convolve_tile(
                x,
                weight,
                bias,
                geometry,
                (out_h, out_w),
                image,
                first,
                len,
                dst,
            );
        });
    out
}

fn tile_pixels(geometry: ConvGeometry, pixels: usize) -> usize {
    let by_cache = PATCH_TILE_BYTES / (geometry.patch_len().max(1) * std::mem::size_of::<f32>());
    // Enough tiles for every thread to have a few, when the image allows it.
    let threads = rayon::current_num_threads().max(1);
    let by_threads = (geometry.batch * pixels).div_ceil(4 * threads);
    by_cache.min(by_threads).max(MIN_TILE_PIXELS).min(pixels)
}

/// Output pixels `first..first + len` of one image: bias, then `weight @ patches` on top.
#[allow(clippy::too_many_arguments)]
fn convolve_tile(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    geometry: ConvGeometry,
    (out_h, out_w): (usize, usize),
    image: usize,
    first: usize,
    len: usize,
    dst: *mut f32,
) {
    let pixels = out_h * out_w;
    let image_len = geometry.in_channels * geometry.height * geometry.width;
    let input = &x[image * image_len..(image + 1) * image_len];
    for (channel, &b) in bias.iter().enumerate() {
        // SAFETY: see `conv2d`; this row segment belongs to this tile.
        unsafe { std::slice::from_raw_parts_mut(dst.add(channel * pixels), len) }.fill(b);
    }
    let patch_len = geometry.patch_len();
    let multiply = |rhs: *const f32, rhs_row_stride: usize| {
        // SAFETY: weight is [out, patch_len]; rhs is [patch_len, len] with the given row
        // stride; dst is [out, len] with row stride `pixels`, all inside their buffers.
        unsafe {
            gemm(
                geometry.out_channels,
                len,
                patch_len,
                dst,
                1,
                pixels as isize,
                true,
                weight.as_ptr(),
                1,
                patch_len as isize,
                rhs,
                1,
                rhs_row_stride as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    };
    if geometry.is_pointwise() {
        // The input's channel rows already are the patch matrix.
        multiply(input[first..].as_ptr(), pixels);
        return;
    }
    PATCHES.with_borrow_mut(|patches| {
        patches.resize(patch_len * len, 0.0);
        let patches = &mut patches[..patch_len * len];
        fill_patches(input, geometry, out_w, first, patches, len);
        multiply(patches.as_ptr(), len);
    });
}

/// Row `(c, i, j)` of `patches` holds input channel `c` shifted by kernel tap `(i, j)` for
/// output pixels `first..first + len`; taps that fall in the padding are zero.
fn fill_patches(
    input: &[f32],
    geometry: ConvGeometry,
    out_w: usize,
    first: usize,
    patches: &mut [f32],
    len: usize,
) {
    let ConvGeometry {
        height,
        width,
        kernel_h,
        kernel_w,
        stride,
        padding,
        ..
    } = geometry;
    let mut rows = patches.chunks_exact_mut(len);
    for channel in input.chunks_exact(height * width) {
        for i in 0..kernel_h {
            for j in 0..kernel_w {
                let row = rows.next().expect("one patch row per tap");
                let mut pixel = first;
                let mut filled = 0;
                while filled < len {
                    let (y, x0) = (pixel / out_w, pixel % out_w);
                    let run = (out_w - x0).min(len - filled);
                    let segment = &mut row[filled..filled + run];
                    let in_y = (y * stride + i) as isize - padding as isize;
                    if in_y < 0 || in_y >= height as isize {
                        segment.fill(0.0);
                    } else {
                        let source = &channel[in_y as usize * width..(in_y as usize + 1) * width];
                        copy_shifted(source, segment, x0, stride, j as isize - padding as isize);
                    }
                    pixel += run;
                    filled += run;
                }
            }
        }
    }
}

/// `segment[n] = source[(x0 + n) * stride + offset]`, zero where that index is outside `source`.
fn copy_shifted(source: &[f32], segment: &mut [f32], x0: usize, stride: usize, offset: isize) {
    let width = source.len() as isize;
    if stride == 1 {
        let start = x0 as isize + offset;
        let end = start + segment.len() as isize;
        let (lo, hi) = (start.clamp(0, width), end.clamp(0, width));
        let lead = (lo - start) as usize;
        let copied = (hi - lo).max(0) as usize;
        segment[..lead].fill(0.0);
        segment[lead..lead + copied].copy_from_slice(&source[lo as usize..lo as usize + copied]);
        segment[lead + copied..].fill(0.0);
        return;
    }
    for (n, value) in segment.iter_mut().enumerate() {
        let index = ((x0 + n) * stride) as isize + offset;
        *value = if (0..width).contains(&index) {
            source[index as usize]
        } else {
            0.0
        };
    }
}
