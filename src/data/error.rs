//! Typed errors and warnings of the data module.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while listing, decoding, transforming or batching images.
///
/// Every variant names the file or folder it is about, so a message read in a log is enough to
/// find the culprit.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read (missing, permissions, I/O failure).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The dataset root holds no class folders.
    #[error("{}: no class folders found (expected root/<class>/<image> or root/train/<class>/<image>)", path.display())]
    EmptyRoot {
        /// The root folder.
        path: PathBuf,
    },
    /// A class folder holds no usable image.
    #[error("{}: class folder holds no image with an accepted extension ({extensions})", path.display())]
    EmptyClass {
        /// The class folder.
        path: PathBuf,
        /// The accepted extensions, comma separated.
        extensions: String,
    },
    /// The class folders of the training and validation sets differ.
    #[error("{}: class folders {found:?} differ from the training classes {expected:?}", path.display())]
    ClassMismatch {
        /// The validation root.
        path: PathBuf,
        /// Classes of the training set.
        expected: Vec<String>,
        /// Classes found here.
        found: Vec<String>,
    },
    /// A file could not be decoded as an image (unknown format, corrupt or truncated data).
    #[error("{}: cannot decode image: {message}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// Files of a dataset that cannot be decoded (truncated, corrupt), found by
    /// [`ImageFolder::verify`](super::ImageFolder::verify) before training.
    #[error("{}: {} damaged image(s), nothing trained (pass the lenient option, e.g. --skip-bad-images, to train without them):\n{}", path.display(), files.len(), list_files(files))]
    Damaged {
        /// The dataset root.
        path: PathBuf,
        /// Each damaged file and why it cannot be decoded.
        files: Vec<(PathBuf, String)>,
    },
    /// An image is larger than the configured pixel limit (decompression-bomb guard).
    #[error("{}: image is {width}x{height} = {pixels} pixels, over the limit of {limit} pixels", path.display())]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// Width read from the header.
        width: u32,
        /// Height read from the header.
        height: u32,
        /// `width * height`.
        pixels: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A transform could not be applied (bad parameters or wrong order in a pipeline).
    #[error("{}: {message}", path.display())]
    Transform {
        /// The image being transformed (empty when not known).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Images of one batch came out with different shapes.
    #[error("{}: transformed to shape {found:?}, but the batch's first image has shape {expected:?}; add a Resize/CenterCrop to the pipeline", path.display())]
    ShapeMismatch {
        /// The offending image.
        path: PathBuf,
        /// `[C, H, W]` of the batch.
        expected: [usize; 3],
        /// `[C, H, W]` of this image.
        found: [usize; 3],
    },
    /// An argument was out of range (e.g. a split fraction outside `[0, 1)`).
    #[error("{}: {message}", path.display())]
    InvalidArgument {
        /// The dataset or file the argument applies to.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A loader worker thread panicked.
    #[error("{}: a loader worker thread panicked", path.display())]
    WorkerPanicked {
        /// The dataset root.
        path: PathBuf,
    },
}

impl DataError {
    /// The file or folder this error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::EmptyRoot { path }
            | DataError::EmptyClass { path, .. }
            | DataError::ClassMismatch { path, .. }
            | DataError::Decode { path, .. }
            | DataError::TooLarge { path, .. }
            | DataError::Transform { path, .. }
            | DataError::ShapeMismatch { path, .. }
            | DataError::InvalidArgument { path, .. }
            | DataError::Damaged { path, .. }
            | DataError::WorkerPanicked { path } => path,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One line per damaged file: `  <reason>` (the reason names the file).
fn list_files(files: &[(PathBuf, String)]) -> String {
    files
        .iter()
        .map(|(_, reason)| format!("  {reason}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a file was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// The name starts with a dot (`.DS_Store`, `._photo.jpg`, `.ipynb_checkpoints`).
    Hidden,
    /// The extension is not in the accepted list (a `.txt`, or a `.gif` by default).
    NotAnImage,
    /// Not a folder where a class folder was expected (a loose file in the root).
    NotAClassFolder,
    /// The file could not be decoded and the dataset is lenient (the message says why).
    Undecodable(String),
}

/// A file that was skipped, with the reason. One warning per skipped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The skipped file or folder.
    pub path: PathBuf,
    /// Why it was skipped.
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            WarningKind::Hidden => write!(f, "{p}: skipped hidden file"),
            WarningKind::NotAnImage => {
                write!(f, "{p}: skipped, extension not in the accepted image list")
            }
            WarningKind::NotAClassFolder => write!(f, "{p}: skipped, not a class folder"),
            WarningKind::Undecodable(m) => write!(f, "{p}: skipped undecodable image: {m}"),
        }
    }
}
