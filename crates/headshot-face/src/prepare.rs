//! The analyzer as the prepare stage's [`FacePreparer`]: the largest face of the photo, as the
//! device stage needs it.

use headshot_core::{FacePreparer, GenerationError, PreparedFace};

use crate::analyzer::{AnalyzedFace, FaceAnalyzer};

impl From<AnalyzedFace> for PreparedFace {
    fn from(face: AnalyzedFace) -> PreparedFace {
        PreparedFace {
            id_embedding: face.embedding,
            aligned_224: face.aligned_224,
        }
    }
}

impl FacePreparer for FaceAnalyzer {
    fn prepare_face(&self, photo: &[u8]) -> Result<PreparedFace, GenerationError> {
        Ok(self.analyze_largest(photo)?.into())
    }
}
