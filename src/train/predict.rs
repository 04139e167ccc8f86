//! Class probabilities and names for images.

use crate::kernels::ConvBackend;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;

use super::FittingPasses;
use crate::models::ImageClassifier;

/// The prediction for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Most probable class.
    pub class: usize,
    /// Its name (the index as text when no names were given).
    pub name: String,
    /// Probability of every class (softmax of the logits).
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The `k` most probable classes as `(class, probability)`, best first.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        let mut ranked: Vec<(usize, f32)> =
            self.probabilities.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

/// Predicts the class of each image of `images` `[N, 3, H, W]`, in inference mode whatever
/// model it is given (a copy without gradients runs, as `model.valid()` would: the training
/// model `fit` returns can be passed as is, its BatchNorm statistics and dropout untouched).
pub fn predict<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    images: Tensor<B, 4>,
    class_names: &[String],
) -> Vec<Prediction> {
    let model = model.clone().no_grad();
    let device = images.device();
    let logits = FittingPasses::new(&model, &device).run(images, M::forward);
    let probabilities = softmax(logits, 1);
    host_rows(probabilities)
        .into_iter()
        .map(|probabilities| {
            let class = argmax(&probabilities);
            let name = class_names
                .get(class)
                .cloned()
                .unwrap_or_else(|| class.to_string());
            Prediction {
                class,
                name,
                probabilities,
            }
        })
        .collect()
}

/// The rows of a `[N, C]` tensor, copied to the host.
pub(crate) fn host_rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, c] = t.dims();
    let values = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    values.chunks(c.max(1)).map(<[f32]>::to_vec).collect()
}

/// Index of the largest value (the first of equals).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(k, _)| k)
}
