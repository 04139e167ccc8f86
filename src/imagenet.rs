//! The 1000 ImageNet-1k class names, and classifying image files with an ImageNet model read
//! from ONNX — what `examples/predict.rs` and `examples/imagenet_eval.rs` run.
//!
//! ```no_run
//! use transfer_vision::backend::Cpu;
//! use transfer_vision::imagenet::{PredictOptions, Predictor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Default::default();
//! let predictor = Predictor::<Cpu>::from_onnx(
//!     "../shared/weights/mobilenet_v2_tf_imagenet.onnx",
//!     &PredictOptions::default(),
//!     &device,
//! )?;
//! for result in predictor.predict_files(&["cat.jpg".into()], 5) {
//!     println!("{}", result?);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{
    CenterCrop, ChwImage, Compose, DataError, DecodeOptions, Normalization, Resize, Transform,
    decode_rgb,
};
use crate::models::{MobileNetV2, ModelSpec, ResNet};
use crate::train::{Prediction, predict};
use crate::weights::{ImportReport, WeightsError, detect_spec, load_onnx_into, read_onnx};

/// Number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

/// Smallest height and width the models accept.
pub const MIN_SIZE: usize = 32;

const CLASSES_TXT: &str = include_str!("../assets/imagenet_classes.txt");

/// The 1000 ImageNet-1k class names in torchvision's order (sorted WordNet ids: 0 = `tench`,
/// 999 = `toilet tissue`), as torchvision's `IMAGENET1K_V1` weights list them (`meta["categories"]`).
/// The list ships with the crate (`assets/imagenet_classes.txt`, made by
/// `tools/make_predict_fixtures.py`).
pub fn imagenet_classes() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| CLASSES_TXT.lines().filter(|l| !l.is_empty()).collect())
}

/// Which architecture the ONNX file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelChoice {
    /// Whatever the graph holds (MobileNetV2 or ResNet18/34).
    #[default]
    Auto,
    /// A MobileNetV2.
    MobileNetV2,
    /// A ResNet18.
    ResNet18,
    /// A ResNet34.
    ResNet34,
}

impl ModelChoice {
    /// The [`ModelSpec::name`] this choice requires (`None` for `Auto`).
    pub fn required_name(self) -> Option<&'static str> {
        match self {
            ModelChoice::Auto => None,
            ModelChoice::MobileNetV2 => Some("mobilenet_v2"),
            ModelChoice::ResNet18 => Some("resnet18"),
            ModelChoice::ResNet34 => Some("resnet34"),
        }
    }
}

/// How pixels are scaled before the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preprocess {
    /// TensorFlow `[-1, 1]` scaling when the file asks for it
    /// ([`ImportReport::tf_preprocessing`]: its `preprocessing` metadata, or TF-SAME padding),
    /// ImageNet mean/std otherwise.
    #[default]
    Auto,
    /// ImageNet mean/std (torchvision-trained weights).
    ImageNet,
    /// `p / 127.5 - 1` (TensorFlow-trained weights).
    Tf,
}

/// Settings of a [`Predictor`].
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOptions {
    /// Required architecture.
    pub model: ModelChoice,
    /// Pixel scaling.
    pub preprocess: Preprocess,
    /// Shorter side after resizing (Pillow's antialiased bilinear, like torchvision's
    /// `Resize(n)`); `None` keeps the decoded size.
    pub resize: Option<u32>,
    /// Side of the centre crop; `None` keeps the whole (resized) image.
    pub crop: Option<u32>,
    /// Images per forward pass in [`Predictor::predict_files`].
    pub batch_size: usize,
}

impl Default for PredictOptions {
    /// `auto` model and preprocessing, resize 256, crop 224, batches of 16.
    fn default() -> Self {
        PredictOptions::eval(224)
    }
}

impl PredictOptions {
    /// The standard ImageNet evaluation at `size`: shorter side `round(size * 256 / 224)`
    /// (256 for 224, 183 for 160), centre crop `size`, `auto` model and preprocessing.
    pub fn eval(size: u32) -> Self {
        PredictOptions {
            model: ModelChoice::Auto,
            preprocess: Preprocess::Auto,
            resize: Some((f64::from(size) * 256.0 / 224.0).round() as u32),
            crop: Some(size),
            batch_size: 16,
        }
    }
}

/// Why an image could not be classified or the model not loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The weights file could not be loaded (or holds another architecture than asked).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The image could not be read, decoded or transformed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The image cannot go through the network (too small, or shapes that do not batch).
    #[error("{}: {message}", path.display())]
    Input {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl PredictError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PredictError::Weights(e) => match e {
                WeightsError::Io { path, .. }
                | WeightsError::Corrupt { path, .. }
                | WeightsError::Architecture { path, .. }
                | WeightsError::Mismatch { path, .. } => path,
                WeightsError::Onnx(e) => e.path(),
            },
            PredictError::Data(e) => e.path(),
            PredictError::Input { path, .. } => path,
        }
    }
}

/// The `k` best classes of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// The image file.
    pub file: PathBuf,
    /// Class indices, most probable first (ties: lower index first).
    pub indices: Vec<usize>,
    /// Their names.
    pub names: Vec<String>,
    /// Their softmax probabilities.
    pub probabilities: Vec<f32>,
}

impl TopK {
    /// The `k` best classes of a [`Prediction`], named from `class_names` (the index as text
    /// past its end).
    pub fn from_prediction(
        file: impl Into<PathBuf>,
        prediction: &Prediction,
        k: usize,
        class_names: &[String],
    ) -> Self {
        let top = prediction.top_k(k);
        TopK {
            file: file.into(),
            indices: top.iter().map(|&(i, _)| i).collect(),
            names: top
                .iter()
                .map(|&(i, _)| class_names.get(i).cloned().unwrap_or_else(|| i.to_string()))
                .collect(),
            probabilities: top.iter().map(|&(_, p)| p).collect(),
        }
    }

    /// One JSON object on one line: `{"file", "indices", "names", "probabilities"}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "file": self.file.to_string_lossy(),
            "indices": self.indices,
            "names": self.names,
            "probabilities": self.probabilities,
        })
        .to_string()
    }
}

impl fmt::Display for TopK {
    /// The file, then one line per class: probability in percent, name, index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        for ((i, name), p) in self
            .indices
            .iter()
            .zip(&self.names)
            .zip(&self.probabilities)
        {
            write!(f, "\n  {:>7.3}%  {name} ({i})", p * 100.0)?;
        }
        Ok(())
    }
}

/// A network loaded from ONNX, whichever architecture the file holds.
#[derive(Debug)]
pub enum Network<B: Backend> {
    /// A MobileNetV2.
    MobileNetV2(Box<MobileNetV2<B>>),
    /// A ResNet18/34.
    ResNet(Box<ResNet<B>>),
}

impl<B: Backend> Network<B> {
    /// Class probabilities of `images` `[N, 3, H, W]` ([`predict`] on the inner model).
    pub fn predict(&self, images: Tensor<B, 4>, class_names: &[String]) -> Vec<Prediction> {
        match self {
            Network::MobileNetV2(m) => predict(m.as_ref(), images, class_names),
            Network::ResNet(m) => predict(m.as_ref(), images, class_names),
        }
    }
}

/// Classifies image files with a model read from ONNX: decode → resize → centre crop →
/// normalise → forward → softmax.
#[derive(Debug)]
pub struct Predictor<B: Backend> {
    network: Network<B>,
    report: ImportReport,
    normalization: Normalization,
    pipeline: Compose,
    class_names: Vec<String>,
    batch_size: usize,
    decode: DecodeOptions,
    device: B::Device,
}

impl<B: Backend> Predictor<B> {
    /// Reads the ONNX file at `path`, detects its architecture, checks it against
    /// `options.model`, loads the weights and sets up the preprocessing.
    ///
    /// Class names are the ImageNet ones when the file has 1000 classes, the indices otherwise.
    /// The network is loaded for inference only: its BatchNorms are folded into the
    /// convolutions (`fuse_for_inference`, same outputs within float rounding, ~4× faster on the
    /// CPU backend).
    ///
    /// # Errors
    /// [`PredictError::Weights`] for a missing or unreadable file, an unsupported graph or an
    /// architecture other than `options.model`; the message names the file.
    pub fn from_onnx(
        path: impl AsRef<Path>,
        options: &PredictOptions,
        device: &B::Device,
    ) -> Result<Self, PredictError> {
        let path = path.as_ref();
        let onnx = read_onnx(path).map_err(WeightsError::from)?;
        let spec = detect_spec(&onnx)?;
        if let Some(wanted) = options.model.required_name()
            && wanted != spec.name()
        {
            return Err(WeightsError::Architecture {
                path: path.to_path_buf(),
                expected: wanted.into(),
                found: spec.name().into(),
            }
            .into());
        }
        let (network, report) = match &spec {
            ModelSpec::MobileNetV2(config) => {
                let (m, r) = load_onnx_into(&onnx, config.init::<B>(device))?;
                (Network::MobileNetV2(Box::new(m.fuse_for_inference())), r)
            }
            ModelSpec::ResNet(config) => {
                let (m, r) = load_onnx_into(&onnx, config.init::<B>(device))?;
                (Network::ResNet(Box::new(m.fuse_for_inference())), r)
            }
        };
        let normalization = match options.preprocess {
            Preprocess::Tf => Normalization::Tf,
            Preprocess::ImageNet => Normalization::ImageNet,
            Preprocess::Auto if report.tf_preprocessing() => Normalization::Tf,
            Preprocess::Auto => Normalization::ImageNet,
        };
        let mut steps: Vec<Transform> = Vec::new();
        if let Some(n) = options.resize {
            steps.push(Resize::shorter(n).into());
        }
        if let Some(n) = options.crop {
            steps.push(CenterCrop::new(n).into());
        }
        steps.push(Transform::ToTensor);
        steps.push(normalization.normalize().into());
        let num_classes = match &spec {
            ModelSpec::MobileNetV2(c) => c.num_classes,
            ModelSpec::ResNet(c) => c.num_classes,
        };
        let class_names = if num_classes == NUM_CLASSES {
            imagenet_classes().iter().map(|s| s.to_string()).collect()
        } else {
            (0..num_classes).map(|i| i.to_string()).collect()
        };
        Ok(Predictor {
            network,
            report,
            normalization,
            pipeline: Compose::new(steps),
            class_names,
            batch_size: options.batch_size.max(1),
            decode: DecodeOptions::default(),
            device: device.clone(),
        })
    }

    /// What the import found (architecture, padding, preprocessing metadata).
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// The network.
    pub fn network(&self) -> &Network<B> {
        &self.network
    }

    /// The normalisation in use (after resolving [`Preprocess::Auto`]).
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// The preprocessing pipeline (resize, crop, `ToTensor`, normalisation).
    pub fn pipeline(&self) -> &Compose {
        &self.pipeline
    }

    /// The name of each class.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Decodes the file at `path` and runs the preprocessing pipeline.
    ///
    /// # Errors
    /// [`PredictError::Data`] when the file cannot be read or decoded, [`PredictError::Input`]
    /// when the result is smaller than [`MIN_SIZE`]; both name `path`.
    pub fn preprocess(&self, path: &Path) -> Result<ChwImage, PredictError> {
        let img = decode_rgb(path, &self.decode)?;
        let chw = self
            .pipeline
            .apply(img, &mut ChaCha8Rng::seed_from_u64(0))
            .map_err(|e| match e {
                DataError::Transform { message, .. } => DataError::Transform {
                    path: path.to_path_buf(),
                    message,
                },
                other => other,
            })?;
        if chw.height < MIN_SIZE || chw.width < MIN_SIZE {
            return Err(PredictError::Input {
                path: path.to_path_buf(),
                message: format!(
                    "image is {}x{} after preprocessing; the model needs at least {MIN_SIZE}x{MIN_SIZE} (resize it)",
                    chw.width, chw.height
                ),
            });
        }
        Ok(chw)
    }

    /// Class probabilities of preprocessed images of one shape, in one forward pass.
    ///
    /// # Errors
    /// [`PredictError::Input`] when the images do not all have the same shape or are smaller
    /// than [`MIN_SIZE`] (`paths`, when given, name the offending image).
    pub fn predict_images(
        &self,
        images: &[ChwImage],
        paths: &[PathBuf],
    ) -> Result<Vec<Prediction>, PredictError> {
        let Some(first) = images.first() else {
            return Ok(Vec::new());
        };
        let shape = first.shape();
        let name = |i: usize| paths.get(i).cloned().unwrap_or_default();
        for (i, img) in images.iter().enumerate() {
            if img.shape() != shape || img.data.len() != shape.iter().product::<usize>() {
                return Err(PredictError::Input {
                    path: name(i),
                    message: format!("shape {:?} differs from the batch's {shape:?}", img.shape()),
                });
            }
            if img.height < MIN_SIZE || img.width < MIN_SIZE || img.channels != 3 {
                return Err(PredictError::Input {
                    path: name(i),
                    message: format!(
                        "shape {:?}: the model needs 3 channels and at least {MIN_SIZE}x{MIN_SIZE}",
                        img.shape()
                    ),
                });
            }
        }
        let mut data = Vec::with_capacity(images.len() * first.data.len());
        for img in images {
            data.extend_from_slice(&img.data);
        }
        let tensor = Tensor::<B, 4>::from_data(
            TensorData::new(data, [images.len(), shape[0], shape[1], shape[2]]),
            &self.device,
        );
        Ok(self.network.predict(tensor, &self.class_names))
    }

    /// The `top` best classes of each file, in the order given. Files are decoded and
    /// preprocessed, then classified in batches of same-shaped images. A file that fails does not
    /// stop the others: its entry holds the error, which names it.
    pub fn predict_files(&self, files: &[PathBuf], top: usize) -> Vec<Result<TopK, PredictError>> {
        let mut out = Vec::with_capacity(files.len());
        for chunk in files.chunks(self.batch_size) {
            let mut results: Vec<Option<Result<TopK, PredictError>>> = Vec::new();
            // Group the images that preprocessed fine by shape (one forward pass per shape).
            let mut groups: BTreeMap<[usize; 3], Vec<(usize, ChwImage)>> = BTreeMap::new();
            for (i, file) in chunk.iter().enumerate() {
                match self.preprocess(file) {
                    Ok(img) => {
                        results.push(None);
                        groups.entry(img.shape()).or_default().push((i, img));
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            for members in groups.into_values() {
                let (idx, images): (Vec<usize>, Vec<ChwImage>) = members.into_iter().unzip();
                let paths: Vec<PathBuf> = idx.iter().map(|&i| chunk[i].clone()).collect();
                match self.predict_images(&images, &paths) {
                    Ok(predictions) => {
                        for (&i, p) in idx.iter().zip(&predictions) {
                            results[i] = Some(Ok(TopK::from_prediction(
                                &chunk[i],
                                p,
                                top,
                                &self.class_names,
                            )));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for &i in &idx {
                            results[i] = Some(Err(PredictError::Input {
                                path: chunk[i].clone(),
                                message: message.clone(),
                            }));
                        }
                    }
                }
            }
            out.extend(results.into_iter().enumerate().map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(PredictError::Input {
                        path: chunk[i].clone(),
                        message: "no prediction was made".into(),
                    })
                })
            }));
        }
        out
    }
}
