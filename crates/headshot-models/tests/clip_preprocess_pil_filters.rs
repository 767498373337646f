//! `pil_resize` against Pillow 13.0.0 (the reference environment's) for every convolution filter, down- and upscaling, odd sizes.
//! Expected values are FNV-1a 64 hashes of `Image.resize(...).tobytes()` on the synthetic picture
//! below, printed by this Python (Pillow) snippet:
//!
//! ```python
//! def picture(w, h, seed):
//!     y, x = np.mgrid[0:h, 0:w].astype(np.uint64)
//!     v = (x * x * 7 + y * 13 + x * y * 3 + seed * 101) % 256
//!     rgb = np.stack([(x * 255 // max(w - 1, 1)), v, (y * 37 + x * 11) % 256], axis=-1).astype(np.uint8)
//!     return Image.fromarray(rgb)
//! def fnv(b):
//!     h = 0xcbf29ce484222325
//!     for byte in b:
//!         h ^= byte; h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
//!     return h
//! for (w, h, ow, oh) in CASES: for f in [1, 2, 3, 4, 5]:
//!     print(w, h, ow, oh, f, hex(fnv(picture(w, h, 3).resize((ow, oh), resample=f).tobytes())))
//! ```

use headshot_core::RgbImage;
use headshot_models::clip_preprocess::{pil_resize, PilFilter};

fn picture(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h as u64 {
        for x in 0..w as u64 {
            let v = (x * x * 7 + y * 13 + x * y * 3 + seed * 101) % 256;
            pixels.extend_from_slice(&[
                (x * 255 / (w as u64 - 1).max(1)) as u8,
                v as u8,
                ((y * 37 + x * 11) % 256) as u8,
            ]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// (width, height, out width, out height, Pillow filter code, hash of Pillow's output)
const PILLOW: &[(u32, u32, u32, u32, i64, u64)] = &[
    // Both grow (odd sizes).
    (31, 17, 57, 91, 1, 0xa36a04beb616e6ee),
    (31, 17, 57, 91, 2, 0xa88055679d93de14),
    (31, 17, 57, 91, 3, 0x9ba62f1aae99b422),
    (31, 17, 57, 91, 4, 0x77ca58e1ff387be1),
    (31, 17, 57, 91, 5, 0xd29b2bae2c26598d),
    // Both shrink (the 512x768 output to CLIP).
    (512, 768, 224, 336, 1, 0x804552d089758857),
    (512, 768, 224, 336, 2, 0xfc57701f326327a2),
    (512, 768, 224, 336, 3, 0x2a149a8d07d26635),
    (512, 768, 224, 336, 4, 0xc9bb35ec6d9e7809),
    (512, 768, 224, 336, 5, 0xa0237d5ffb6494e4),
    // Width grows, height shrinks: Pillow 13 runs the vertical pass first.
    (100, 150, 201, 40, 1, 0x2106d2591eaa0214),
    (100, 150, 201, 40, 2, 0xaa710502c8725f74),
    (100, 150, 201, 40, 3, 0xd67dc62ca7ed7d63),
    (100, 150, 201, 40, 4, 0x310bf2b5fd64f14b),
    (100, 150, 201, 40, 5, 0x15a39b49fca13fe5),
    // Same size: a copy.
    (224, 224, 224, 224, 3, 0xed179efa0f3cc0e5),
    // Width shrinks, height grows: horizontal pass first.
    (60, 40, 30, 80, 1, 0x66659002e11342c6),
    (60, 40, 30, 80, 2, 0xd4fda1157664713d),
    (60, 40, 30, 80, 3, 0x82e71c6733bc4c8c),
    (60, 40, 30, 80, 4, 0xc838895faa3786d5),
    (60, 40, 30, 80, 5, 0x8b72a003f4224b17),
    // Width kept, height shrinks: vertical pass only.
    (64, 200, 64, 90, 1, 0x37dc9dd238d7bbd8),
    (64, 200, 64, 90, 2, 0x5282cadcd5c51e6f),
    (64, 200, 64, 90, 3, 0x0bbc9181c3a033ba),
    (64, 200, 64, 90, 4, 0x468f060893fd4ec7),
    (64, 200, 64, 90, 5, 0x813dfa4742396c3f),
    // Both grow.
    (40, 30, 97, 71, 1, 0xe5fb7055b2ab190e),
    (40, 30, 97, 71, 2, 0x9f00bf2b3cb1b702),
    (40, 30, 97, 71, 3, 0x5bbef45af7859b71),
    (40, 30, 97, 71, 4, 0x9cc45223bfb60ff2),
    (40, 30, 97, 71, 5, 0x8e2b07bba65f58ac),
    // Width grows by one, height shrinks: vertical pass first.
    (223, 500, 224, 240, 1, 0xb4a1c565dfbf9728),
    (223, 500, 224, 240, 2, 0xe8209288a006a73d),
    (223, 500, 224, 240, 3, 0x52d13dd0b63967d1),
    (223, 500, 224, 240, 4, 0x3fe3df0d1a42807f),
    (223, 500, 224, 240, 5, 0x46ccb7ae9f20f119),
];

#[test]
fn every_filter_matches_pillow_bit_for_bit() {
    for &(w, h, ow, oh, code, expected) in PILLOW {
        let filter = PilFilter::from_pil_code(code).expect("a convolution filter code");
        let out = pil_resize(&picture(w, h, 3), ow, oh, filter);
        assert_eq!((out.width, out.height), (ow, oh));
        assert_eq!(
            fnv1a64(&out.pixels),
            expected,
            "{w}x{h} -> {ow}x{oh} with {filter:?}"
        );
    }
}
