//! A scripted face analyzer: as the prepare stage it records every photo it is given, refuses
//! two marker photos the way the real analyzer refuses bad ones, and can be made slow; as the
//! likeness scorer it reads a score from the image (see [`scripted_likeness`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use headshot_core::{FacePreparer, GenerationError, LikenessScorer, PreparedFace, RgbImage};

use crate::gate::Gate;
use crate::jobs::prepared_face;

/// Refused as an unreadable image.
pub const UNREADABLE_PHOTO: &[u8] = b"not an image at all";
/// Refused with `NoFace`.
pub const FACELESS_PHOTO: &[u8] = b"a photo of a wall";

#[derive(Clone, Default)]
pub struct ScriptedFaces {
    /// Every photo given, in order.
    pub photos: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Time each analysis takes (a stand-in for ONNX Runtime on a busy CPU).
    pub delay: Duration,
    /// This photo's analysis waits at the gate (a slow analyzer the test controls).
    pub held_photo: Option<(Vec<u8>, Gate)>,
}

impl ScriptedFaces {
    pub fn photos(&self) -> Vec<Vec<u8>> {
        self.photos.lock().unwrap().clone()
    }
}

impl FacePreparer for ScriptedFaces {
    /// Every other photo shows one face, so only `face_index` 0 exists.
    fn prepare_face(
        &self,
        photo: &[u8],
        face_index: usize,
    ) -> Result<PreparedFace, GenerationError> {
        self.photos.lock().unwrap().push(photo.to_vec());
        match &self.held_photo {
            Some((held, gate)) if held == photo => gate.wait(),
            _ => std::thread::sleep(self.delay),
        }
        match photo {
            UNREADABLE_PHOTO => Err(GenerationError::UnreadableImage(
                "the data is not a JPEG, PNG or WebP image".into(),
            )),
            FACELESS_PHOTO => Err(GenerationError::NoFace),
            _ if face_index > 0 => Err(GenerationError::InvalidInput(format!(
                "face_index {face_index} is out of range: the photo shows 1 face (0 is the largest)"
            ))),
            _ => Ok(prepared_face()),
        }
    }
}

/// The likeness [`ScriptedFaces`] gives an image: its first byte over 255 (for a
/// [`crate::ScriptedGenerator`] image, the low byte of the seed it encodes); no face when the
/// first pixel is black.
pub fn scripted_likeness(image: &RgbImage) -> Option<f32> {
    match image.pixels.get(..3) {
        Some([0, 0, 0]) | None => None,
        Some(rgb) => Some(f32::from(rgb[0]) / 255.0),
    }
}

impl LikenessScorer for ScriptedFaces {
    fn likeness(
        &self,
        _identity: &[f32],
        image: &RgbImage,
    ) -> Result<Option<f32>, GenerationError> {
        Ok(scripted_likeness(image))
    }
}
