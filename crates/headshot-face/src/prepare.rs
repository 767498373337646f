//! The analyzer as the prepare stage's [`FacePreparer`]: the chosen face of the photo (by size,
//! largest first), as the device stage needs it.

use headshot_core::{FacePreparer, GenerationError, PreparedFace};

use crate::analyzer::FaceAnalyzer;

impl FacePreparer for FaceAnalyzer {
    fn prepare_face(
        &self,
        photo: &[u8],
        face_index: usize,
    ) -> Result<PreparedFace, GenerationError> {
        let (face, faces_found) = self.analyze_by_size(photo, face_index)?;
        Ok(PreparedFace {
            id_embedding: face.embedding,
            aligned_224: face.aligned_224,
            faces_found,
            more_aligned_224: Vec::new(),
        })
    }
}
