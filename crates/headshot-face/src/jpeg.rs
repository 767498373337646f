//! JPEG pixels exactly as `cv2.imread` produces them.
//!
//! OpenCV decodes with libjpeg-turbo (ISLOW integer IDCT, "fancy" triangle upsampling of the
//! chroma planes). The `image` crate's pure-Rust decoder (zune-jpeg) differs from it by up to
//! 4/255 on chroma-subsampled photos, enough to move aligned crops by more than 2/255. MozJPEG
//! is a libjpeg-turbo fork with the same decoder, built from vendored C sources (no nasm, no
//! system library), so we decode JPEG pixels with it. Header parsing, limits and EXIF
//! orientation still come from the `image` crate.
//!
//! libjpeg reports fatal errors through `error_exit`, which we turn into an unwind caught by
//! the caller (no panic message is printed). A file that ends early is only a warning to
//! libjpeg (it fills the rest with grey); we treat it as an error, like the other decoders.

use std::ffi::c_int;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JWRN_JPEG_EOF};

/// Decoded JPEG: RGB8 pixels, stored orientation (EXIF not applied here).
pub(crate) struct JpegPixels {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// Decodes `bytes` to RGB like OpenCV's colour mode: YCbCr/RGB/grayscale via libjpeg's own
/// conversion, CMYK/YCCK via OpenCV's Adobe (inverted) CMYK formula.
pub(crate) fn decode_jpeg(bytes: &[u8]) -> Result<JpegPixels, String> {
    match catch_unwind(AssertUnwindSafe(|| decode_unchecked(bytes))) {
        Ok(result) => result,
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the JPEG decoder failed".to_string())),
    }
}

fn decode_unchecked(bytes: &[u8]) -> Result<JpegPixels, String> {
    let decompress = Decompress::with_err(error_manager())
        .from_mem(bytes)
        .map_err(|e| e.to_string())?;
    let is_cmyk = matches!(
        decompress.color_space(),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
    );
    if is_cmyk {
        let mut started = decompress
            .to_colorspace(ColorSpace::JCS_CMYK)
            .map_err(|e| e.to_string())?;
        let (width, height) = (started.width() as u32, started.height() as u32);
        let cmyk: Vec<[u8; 4]> = started.read_scanlines().map_err(|e| e.to_string())?;
        started.finish().map_err(|e| e.to_string())?;
        let rgb = cmyk.iter().flat_map(|&p| adobe_cmyk_to_rgb(p)).collect();
        Ok(JpegPixels { width, height, rgb })
    } else {
        let mut started = decompress.rgb().map_err(|e| e.to_string())?;
        let (width, height) = (started.width() as u32, started.height() as u32);
        let rgb: Vec<u8> = started.read_scanlines::<u8>().map_err(|e| e.to_string())?;
        started.finish().map_err(|e| e.to_string())?;
        if rgb.len() != width as usize * height as usize * 3 {
            return Err("the JPEG data ended before the last scanline".to_string());
        }
        Ok(JpegPixels { width, height, rgb })
    }
}

/// OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R`: Adobe JPEGs store inverted CMYK, so each channel is
/// `k - ((255 - c) * k >> 8)`.
fn adobe_cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let channel = |v: u8| {
        let (v, k) = (i32::from(v), i32::from(k));
        (k - (((255 - v) * k) >> 8)) as u8
    };
    [channel(c), channel(m), channel(y)]
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error only fills in the struct it is given (function pointers, counters).
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(fail_with_message);
    err.emit_message = Some(on_message);
    err
}

fn message_of(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: libjpeg passes its own live struct; `err` was set to our manager by mozjpeg.
    let Some(err) = (unsafe { cinfo.err.as_ref() }) else {
        return "libjpeg error".to_string();
    };
    let code = err.msg_code;
    match err.format_message {
        Some(format) => {
            let mut buffer = [0u8; 200];
            // SAFETY: libjpeg writes at most JMSG_LENGTH_MAX (200) bytes, NUL-terminated. The
            // binding declares the buffer as `&[u8; 80]`; the C side only writes a C string.
            unsafe { format(cinfo, &*(buffer.as_mut_ptr() as *const [u8; 80])) };
            let text = buffer.split(|&b| b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(text).into_owned()
        }
        None => format!("libjpeg error code {code}"),
    }
}

extern "C-unwind" fn fail_with_message(cinfo: &mut jpeg_common_struct) {
    let message = format!("the JPEG data is corrupt: {}", message_of(cinfo));
    resume_unwind(Box::new(message));
}

extern "C-unwind" fn on_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // Level -1 is a warning. Premature end of data means a truncated upload; other warnings
    // (e.g. stray bytes before a marker) are common in real photos and OpenCV ignores them.
    let is_eof =
        unsafe { cinfo.err.as_ref() }.is_some_and(|err| err.msg_code == JWRN_JPEG_EOF as c_int);
    if level < 0 && is_eof {
        resume_unwind(Box::new(
            "the JPEG data is truncated (premature end of file)".to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adobe_cmyk_matches_opencv_formula() {
        assert_eq!(adobe_cmyk_to_rgb([255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(adobe_cmyk_to_rgb([0, 0, 0, 255]), [1, 1, 1]);
        assert_eq!(adobe_cmyk_to_rgb([10, 200, 100, 0]), [0, 0, 0]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_jpeg(&[0xff, 0xd8, 0xff, 0xdb, 0x00, 0x02, 1, 2, 3]).is_err());
        assert!(decode_jpeg(b"not a jpeg at all").is_err());
        assert!(decode_jpeg(&[]).is_err());
    }
}
