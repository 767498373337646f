//! Getting the face photo's bytes: from the request (data URI / base64) or an http(s) URL
//! through the guarded client, then a cheap header check that it is an image of sane size.
//! Full decoding and face detection happen in the pipeline.

use std::io::Cursor;

use headshot_core::wire::FaceImageInput;

use crate::net::{FetchError, GuardedHttp, OutboundLimits};

#[derive(Debug, thiserror::Error)]
pub enum FaceImageError {
    #[error("The face image could not be downloaded: {0}")]
    Download(#[from] FetchError),
    #[error("The face image may not be larger than {limit} bytes.")]
    TooManyBytes { limit: usize },
    #[error("The face image could not be read: {0}. Send a JPEG, PNG or WebP photo.")]
    Unreadable(String),
    #[error("The face image is {width}x{height} pixels; the limit is {limit} pixels in total.")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("The face image is {width}x{height} pixels; each side may be at most {limit} pixels.")]
    SideTooLong { width: u32, height: u32, limit: u32 },
    /// One photo of a list: which one, and why.
    #[error(
        "The face image {position} of {total} cannot be used: {}",
        headshot_core::wire::lower_first(&source.to_string())
    )]
    InList {
        position: usize,
        total: usize,
        #[source]
        source: Box<FaceImageError>,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct FaceImageLimits {
    pub max_bytes: usize,
    pub max_pixels: u64,
    /// Longest side the pipeline's decoder accepts: checked here too, so such an image is
    /// refused before it takes a place in the queue.
    pub max_side: u32,
    pub download: OutboundLimits,
}

impl FaceImageLimits {
    pub fn pipeline_max_side() -> u32 {
        let decode = headshot_face::DecodeLimits::default();
        decode.max_width.min(decode.max_height)
    }
}

/// Returns the encoded image bytes, checked to be a readable image within the limits.
pub async fn obtain_face_image(
    input: &FaceImageInput,
    http: &GuardedHttp,
    limits: FaceImageLimits,
) -> Result<Vec<u8>, FaceImageError> {
    let bytes = match input {
        FaceImageInput::Url(url) => http
            .get_bytes(url, limits.max_bytes, limits.download)
            .await
            .map_err(|e| match e {
                FetchError::TooLarge { limit } => FaceImageError::TooManyBytes { limit },
                other => FaceImageError::Download(other),
            })?,
        FaceImageInput::Inline { bytes, .. } => {
            if bytes.len() > limits.max_bytes {
                return Err(FaceImageError::TooManyBytes {
                    limit: limits.max_bytes,
                });
            }
            bytes.clone()
        }
    };
    check_image_header(&bytes, &limits)?;
    Ok(bytes)
}

/// Every photo of the request (the first, then the further ones), each as
/// [`obtain_face_image`]; one that fails is named by its position in the list.
pub async fn obtain_face_images(
    first: &FaceImageInput,
    more: &[FaceImageInput],
    http: &GuardedHttp,
    limits: FaceImageLimits,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), FaceImageError> {
    let total = 1 + more.len();
    let in_list = |position: usize| {
        move |source: FaceImageError| {
            if total == 1 {
                source
            } else {
                FaceImageError::InList {
                    position,
                    total,
                    source: Box::new(source),
                }
            }
        }
    };
    let first = obtain_face_image(first, http, limits)
        .await
        .map_err(in_list(1))?;
    let mut others = Vec::with_capacity(more.len());
    for (i, input) in more.iter().enumerate() {
        others.push(
            obtain_face_image(input, http, limits)
                .await
                .map_err(in_list(i + 2))?,
        );
    }
    Ok((first, others))
}

/// Reads only the format and dimensions, so a decompression bomb is refused before decoding.
pub fn check_image_header(
    bytes: &[u8],
    limits: &FaceImageLimits,
) -> Result<(u32, u32), FaceImageError> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| FaceImageError::Unreadable(e.to_string()))?;
    if reader.format().is_none() {
        return Err(FaceImageError::Unreadable(
            "the data is not in a known image format".into(),
        ));
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| FaceImageError::Unreadable(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(FaceImageError::Unreadable("the image has no pixels".into()));
    }
    if width.max(height) > limits.max_side {
        return Err(FaceImageError::SideTooLong {
            width,
            height,
            limit: limits.max_side,
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(FaceImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok((width, height))
}
