//! Where the zeros go around a convolution's input: PyTorch's symmetric padding or TensorFlow's
//! "SAME", which TF-trained weights need to reproduce their outputs.

use burn::empty;

/// How the spatial padding of the convolutions is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    /// PyTorch / torchvision: `kernel / 2` on every side.
    #[default]
    Symmetric,
    /// TensorFlow "SAME": the total padding `max(k - s, 0)` (even inputs) is split with the smaller
    /// half at the top/left, so stride-2 3×3 convolutions pad 0 top/left and 1 bottom/right.
    /// Needed for weights trained in TensorFlow / Keras.
    TfSame,
}

// A constant of the modules that use it: no tensors, no record entry.
empty!(Padding);

impl std::fmt::Display for Padding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Padding::Symmetric => write!(f, "symmetric"),
            Padding::TfSame => write!(f, "tf-same"),
        }
    }
}

impl Padding {
    /// Padding `[top, left, bottom, right]` for a square `kernel` with `stride` on an input of
    /// `height × width` (TfSame depends on the input size; Symmetric does not).
    pub fn amounts(self, kernel: usize, stride: usize, height: usize, width: usize) -> [usize; 4] {
        match self {
            Padding::Symmetric => {
                let p = kernel / 2;
                [p, p, p, p]
            }
            Padding::TfSame => {
                let total = |size: usize| {
                    let out = size.div_ceil(stride);
                    ((out - 1) * stride + kernel).saturating_sub(size)
                };
                let (th, tw) = (total(height), total(width));
                [th / 2, tw / 2, th - th / 2, tw - tw / 2]
            }
        }
    }
}
