//! Classifying image files with a trained model, whichever file holds it: an ImageNet model
//! read from ONNX or a fine-tuned model saved by `save_model` (`.tvm`). The preprocessing comes
//! from the file, as torchvision's `weights.transforms()`; what `examples/predict.rs` and
//! `examples/imagenet_eval.rs` run.
//!
//! ```no_run
//! use transfer_vision::backend::Cpu;
//! use transfer_vision::predict::Predictor;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Default::default();
//! let predictor = Predictor::<Cpu>::from_file("../shared/weights/mobilenet_v2_tf_imagenet.onnx", &device)?;
//! for result in predictor.predict_files(&["cat.jpg".into()], 5) {
//!     println!("{}", result?);
//! }
//! # Ok(()) }
//! ```

use crate::kernels::ConvBackend;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{
    CenterCrop, ChwImage, Compose, DataError, DecodeOptions, Normalization, Preprocessing, Resize,
    Transform, decode_rgb,
};
use crate::imagenet::{NUM_CLASSES, imagenet_classes};
use crate::models::{AnyModel, Architecture, ImageClassifier, ModelSpec};
use crate::train::{Prediction, predict};
use crate::weights::{WeightsError, load_model, load_onnx_as, read_onnx};

/// Smallest height and width the models accept.
pub const MIN_SIZE: usize = 32;

/// How pixels are scaled before the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preprocess {
    /// What the model file says: an ONNX file's `preprocessing` metadata (TF-SAME padded graphs
    /// want TensorFlow's `[-1, 1]` scaling), a saved model's stored preprocessing.
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
    /// The architecture the file must hold, by name (`mobilenet_v2`, `resnet18`, ... as
    /// [`ModelSpec::names`] lists them, or a family such as `resnet`); `None` takes any.
    pub model: Option<String>,
    /// Pixel scaling.
    pub preprocess: Preprocess,
    /// Shorter side after resizing (Pillow's antialiased bilinear, like torchvision's
    /// `Resize(n)`); `None` keeps the decoded size.
    pub resize: Option<u32>,
    /// Side of the centre crop; `None` keeps the whole (resized) image.
    pub crop: Option<u32>,
    /// Resize and crop as the model file says (its preprocessing), ignoring `resize` and
    /// `crop`: what [`PredictOptions::from_model`] sets.
    pub size_from_model: bool,
    /// Images per forward pass in [`Predictor::predict_files`].
    pub batch_size: usize,
}

impl Default for PredictOptions {
    /// Any model, the file's pixel scaling, resize 256, crop 224, batches of 16.
    fn default() -> Self {
        PredictOptions::eval(224)
    }
}

impl PredictOptions {
    /// The standard ImageNet evaluation at `size`: shorter side `round(size * 256 / 224)`
    /// (256 for 224, 183 for 160), centre crop `size`, any model, the file's pixel scaling.
    pub fn eval(size: u32) -> Self {
        PredictOptions {
            model: None,
            preprocess: Preprocess::Auto,
            resize: Some((f64::from(size) * 256.0 / 224.0).round() as u32),
            crop: Some(size),
            size_from_model: false,
            batch_size: 16,
        }
    }

    /// Everything as the model file says: any model, its pixel scaling, its input geometry.
    pub fn from_model() -> Self {
        PredictOptions {
            size_from_model: true,
            ..Self::default()
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
                | WeightsError::Mismatch { path, .. }
                | WeightsError::Unsavable { path, .. } => path,
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

/// Classifies image files with a trained model: decode → resize → centre crop → normalise →
/// forward → softmax.
#[derive(Debug)]
pub struct Predictor<B: ConvBackend> {
    network: AnyModel<B>,
    preprocessing: Preprocessing,
    normalization: Normalization,
    pipeline: Compose,
    class_names: Vec<String>,
    batch_size: usize,
    decode: DecodeOptions,
    device: B::Device,
    metadata: BTreeMap<String, String>,
}

/// The first bytes of a saved model (see `weights::save_model`).
const SAVED_MODEL_MAGIC: &[u8] = b"TVMODEL1";

impl<B: ConvBackend> Predictor<B> {
    /// Loads the model in `path`, an ONNX file or a saved (`.tvm`) model, told apart by their
    /// content, with the preprocessing the file carries.
    ///
    /// # Errors
    /// [`PredictError::Weights`] for a missing or unreadable file or an unsupported graph; the
    /// message names the file.
    pub fn from_file(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, PredictError> {
        Self::from_file_with(path, &PredictOptions::from_model(), device)
    }

    /// [`Predictor::from_file`] with explicit settings: the architecture the file must hold,
    /// pixel scaling (`Auto`: the file's), resize and crop (unless `size_from_model`).
    pub fn from_file_with(
        path: impl AsRef<Path>,
        options: &PredictOptions,
        device: &B::Device,
    ) -> Result<Self, PredictError> {
        let path = path.as_ref();
        let saved = std::fs::File::open(path)
            .and_then(|mut f| {
                let mut magic = [0u8; 8];
                std::io::Read::read_exact(&mut f, &mut magic).map(|()| magic)
            })
            .is_ok_and(|magic| magic == SAVED_MODEL_MAGIC);
        if !saved {
            return Self::from_onnx(path, options, device);
        }
        let (network, info) = load_model::<B, AnyModel<B>>(path, device)?;
        if let Some(wanted) = options.model.as_deref() {
            network.spec().expect(wanted, path)?;
        }
        let mut class_names = info.class_names;
        if class_names.len() != network.num_classes() {
            class_names = default_class_names(network.num_classes());
        }
        Ok(Self {
            metadata: info.metadata,
            ..Self::new(network, info.preprocessing, class_names, options, device)
        })
    }

    /// Reads the ONNX file at `path`, detects its architecture, checks it against
    /// `options.model`, loads the weights and sets up the preprocessing.
    ///
    /// Class names are the file's `class_names` metadata when it names every class (files
    /// written by [`export_onnx`](crate::weights::export_onnx)), else the ImageNet ones when the
    /// file has 1000 classes, the indices otherwise.
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
        let onnx = read_onnx(path.as_ref()).map_err(WeightsError::from)?;
        let (network, report) =
            load_onnx_as::<B, AnyModel<B>>(&onnx, options.model.as_deref(), device)?;
        let class_names = report
            .class_names
            .unwrap_or_else(|| default_class_names(network.num_classes()));
        Ok(Self::new(
            network,
            report.preprocessing,
            class_names,
            options,
            device,
        ))
    }

    fn new(
        network: AnyModel<B>,
        preprocessing: Preprocessing,
        class_names: Vec<String>,
        options: &PredictOptions,
        device: &B::Device,
    ) -> Self {
        let normalization = match options.preprocess {
            Preprocess::Tf => Normalization::Tf,
            Preprocess::ImageNet => Normalization::ImageNet,
            Preprocess::Auto => preprocessing.normalization,
        };
        let pipeline = if options.size_from_model {
            Preprocessing {
                normalization,
                ..preprocessing
            }
            .eval_transform()
        } else {
            let mut steps: Vec<Transform> = Vec::new();
            if let Some(n) = options.resize {
                steps.push(Resize::shorter(n).into());
            }
            if let Some(n) = options.crop {
                steps.push(CenterCrop::new(n).into());
            }
            steps.push(Transform::ToTensor);
            steps.push(normalization.normalize().into());
            Compose::new(steps)
        };
        Predictor {
            network: crate::train::inference_copy(&network),
            preprocessing,
            normalization,
            pipeline,
            class_names,
            batch_size: options.batch_size.max(1),
            decode: DecodeOptions::default(),
            device: device.clone(),
            metadata: BTreeMap::new(),
        }
    }

    /// The free metadata of a saved model ([`ModelInfo::metadata`](crate::weights::ModelInfo):
    /// what trained it, on which data); empty for an ONNX file.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The architecture and configuration of the network.
    pub fn spec(&self) -> ModelSpec {
        self.network.spec()
    }

    /// The preprocessing the model file carries (the pipeline follows it unless options said
    /// otherwise).
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// The network (BatchNorms folded, for inference).
    pub fn network(&self) -> &AnyModel<B> {
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
        Ok(predict(&self.network, tensor, &self.class_names))
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

/// The ImageNet names for 1000 classes, the indices otherwise.
fn default_class_names(num_classes: usize) -> Vec<String> {
    if num_classes == NUM_CLASSES {
        imagenet_classes().iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_classes).map(|i| i.to_string()).collect()
    }
}
