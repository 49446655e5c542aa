//! CNN embedding: an image (a crop or the whole photo) → an L2-normalised feature vector, so that the
//! dot product of two features is their cosine similarity.

use image::RgbImage;

use crate::config::Config;
use crate::error::{Error, ImageError};
use crate::model::{Arithmetic, OnnxModel};

/// A loaded embedding model.
#[derive(Debug)]
pub struct Embedder {
    model: OnnxModel,
}

impl Embedder {
    pub fn load(config: &Config) -> Result<Embedder, Error> {
        let spec = &config.embedder;
        let model = OnnxModel::load(&config.resolve(&spec.model), &spec.input, &[spec.features_output.as_str()], &config.engine, 1)?;
        Ok(Embedder { model })
    }

    /// The arithmetic the model runs in, as loaded.
    pub(crate) fn arithmetic(&self) -> &Arithmetic {
        self.model.arithmetic()
    }

    /// The feature vector's length, known from the model's concrete output shape.
    pub fn feature_len(&self) -> Option<usize> {
        self.model.output_len(0)
    }

    /// The unit-length feature vector of `image` (stretched to the model's input size).
    pub fn embed(&self, image: &RgbImage) -> Result<Vec<f32>, ImageError> {
        let mut outputs = self.model.run(&[image])?;
        let mut feature = outputs.swap_remove(0);
        l2_normalise(&mut feature);
        Ok(feature)
    }
}

/// Scales `v` to unit length; a zero vector stays zero (a black crop through ReLU6 can give one).
pub fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalise(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 4];
        l2_normalise(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }
}
