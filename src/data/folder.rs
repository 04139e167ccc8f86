//! `ImageFolder`: one sub-folder per class, like torchvision's `datasets.ImageFolder`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::decode::{DecodeOptions, decode_rgb};
use super::error::{DataError, Warning, WarningKind};

/// torchvision's `IMG_EXTENSIONS` (without `.gif`, which torchvision skips too).
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// How a folder is scanned and its files decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderOptions {
    /// Accepted file extensions, lower case without the dot, compared case-insensitively
    /// (default [`DEFAULT_EXTENSIONS`]). Files with another extension are skipped with a
    /// [`WarningKind::NotAnImage`] warning. Which decoder runs is decided by content.
    pub extensions: Vec<String>,
    /// Lenient mode: a file that cannot be decoded is skipped with a
    /// [`WarningKind::Undecodable`] warning instead of being an error (default `false`).
    pub lenient: bool,
    /// Decoding options, including the pixel limit.
    pub decode: DecodeOptions,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            extensions: DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            lenient: false,
            decode: DecodeOptions::default(),
        }
    }
}

impl FolderOptions {
    /// Also accepts `ext` (e.g. `"gif"`).
    pub fn with_extension(mut self, ext: &str) -> Self {
        let ext = ext.trim_start_matches('.').to_ascii_lowercase();
        if !self.extensions.contains(&ext) {
            self.extensions.push(ext);
        }
        self
    }

    /// Sets lenient mode (see [`FolderOptions::lenient`]).
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Sets the pixel limit (see [`DecodeOptions::max_pixels`]).
    pub fn max_pixels(mut self, max_pixels: u64) -> Self {
        self.decode.max_pixels = max_pixels;
        self
    }

    fn accepts(&self, path: &Path) -> bool {
        path.extension()
            .and_then(OsStr::to_str)
            .is_some_and(|e| self.extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Index of its class in [`ImageFolder::classes`].
    pub label: usize,
}

/// A labelled set of image files: `root/<class>/**/<image>`, classes sorted by name.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<Sample>,
    warnings: Vec<Warning>,
    options: FolderOptions,
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(PathBuf, bool)>, DataError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        // Follow symlinks like torchvision (os.walk(followlinks=True)).
        let is_dir = std::fs::metadata(&path)
            .map(|m| m.is_dir())
            .map_err(|e| DataError::io(&path, e))?;
        entries.push((path, is_dir));
    }
    entries.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    Ok(entries)
}

impl ImageFolder {
    /// Scans `root/<class>/...` with the default options.
    ///
    /// # Errors
    /// See [`ImageFolder::with_options`].
    pub fn new(root: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::with_options(root, FolderOptions::default())
    }

    /// Scans `root`: every non-hidden sub-folder is a class (sorted by name, torchvision's
    /// order), and every file below it (recursively, sorted) with an accepted extension is a
    /// sample. Hidden files and folders, files with other extensions and loose files in the root
    /// are skipped with one [`Warning`] each. Nothing is decoded here.
    ///
    /// # Errors
    /// [`DataError::Io`] if `root` cannot be read, [`DataError::EmptyRoot`] if it has no class
    /// folder, [`DataError::EmptyClass`] naming the first class folder without an image.
    pub fn with_options(root: impl AsRef<Path>, options: FolderOptions) -> Result<Self, DataError> {
        let root = root.as_ref().to_path_buf();
        let mut warnings = Vec::new();
        let mut class_dirs = Vec::new();
        for (path, is_dir) in read_dir_sorted(&root)? {
            let name = path.file_name().unwrap_or_default();
            if is_hidden(name) {
                warnings.push(Warning {
                    path,
                    kind: WarningKind::Hidden,
                });
            } else if !is_dir {
                warnings.push(Warning {
                    path,
                    kind: WarningKind::NotAClassFolder,
                });
            } else {
                class_dirs.push(path);
            }
        }
        if class_dirs.is_empty() {
            return Err(DataError::EmptyRoot { path: root });
        }
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            let before = samples.len();
            Self::walk(dir, label, &options, &mut samples, &mut warnings)?;
            if samples.len() == before {
                return Err(DataError::EmptyClass {
                    path: dir.clone(),
                    extensions: options.extensions.join(", "),
                });
            }
            classes.push(
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        Ok(ImageFolder {
            root,
            classes,
            samples,
            warnings,
            options,
        })
    }

    fn walk(
        dir: &Path,
        label: usize,
        options: &FolderOptions,
        samples: &mut Vec<Sample>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), DataError> {
        let entries = read_dir_sorted(dir)?;
        // torchvision lists a folder's files before descending into its sub-folders.
        let mut subdirs = Vec::new();
        for (path, is_dir) in entries {
            let name = path.file_name().unwrap_or_default();
            if is_hidden(name) {
                warnings.push(Warning {
                    path,
                    kind: WarningKind::Hidden,
                });
            } else if is_dir {
                subdirs.push(path);
            } else if options.accepts(&path) {
                samples.push(Sample { path, label });
            } else {
                warnings.push(Warning {
                    path,
                    kind: WarningKind::NotAnImage,
                });
            }
        }
        for sub in subdirs {
            Self::walk(&sub, label, options, samples, warnings)?;
        }
        Ok(())
    }

    /// The folder this set was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names, sorted; a sample's label indexes this list.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The samples, class by class, files sorted by path within a class.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample (only possible after a split or [`ImageFolder::verify`]).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples per class, in class order.
    pub fn class_counts(&self) -> Vec<(String, usize)> {
        let mut counts = vec![0usize; self.classes.len()];
        for s in &self.samples {
            counts[s.label] += 1;
        }
        self.classes.iter().cloned().zip(counts).collect()
    }

    /// Files skipped while scanning (and by [`ImageFolder::verify`]), one warning each.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The options this set was scanned with (the loader decodes with them).
    pub fn options(&self) -> &FolderOptions {
        &self.options
    }

    /// A one-line summary: root, number of images and per-class counts.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self
            .class_counts()
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        format!(
            "{}: {} images, {} classes ({})",
            self.root.display(),
            self.len(),
            self.classes.len(),
            counts.join(", ")
        )
    }

    /// Decodes every file once, up front, on `workers` threads (at least one): what finds
    /// damaged photos (truncated downloads, half-copied files) before any training. In strict
    /// mode (the default) the result is an error listing every file that cannot be decoded; in
    /// lenient mode those files are dropped with a warning each. Returns how many were dropped.
    ///
    /// # Errors
    /// [`DataError::Damaged`] naming each bad file and why (strict mode).
    pub fn verify(&mut self, workers: usize) -> Result<usize, DataError> {
        let failures = find_undecodable(&self.samples, &self.options.decode, workers);
        if failures.is_empty() {
            return Ok(0);
        }
        if !self.options.lenient {
            return Err(DataError::Damaged {
                path: self.root.clone(),
                files: failures
                    .into_iter()
                    .map(|(i, e)| (self.samples[i].path.clone(), e.to_string()))
                    .collect(),
            });
        }
        let dropped = failures.len();
        let mut bad = failures.into_iter().peekable();
        let mut kept = Vec::with_capacity(self.samples.len() - dropped);
        for (i, sample) in std::mem::take(&mut self.samples).into_iter().enumerate() {
            match bad.next_if(|(j, _)| *j == i) {
                Some((_, e)) => self.warnings.push(Warning {
                    path: sample.path,
                    kind: WarningKind::Undecodable(e.to_string()),
                }),
                None => kept.push(sample),
            }
        }
        self.samples = kept;
        Ok(dropped)
    }

    fn with_samples(&self, samples: Vec<Sample>) -> ImageFolder {
        ImageFolder {
            root: self.root.clone(),
            classes: self.classes.clone(),
            samples,
            warnings: Vec::new(),
            options: self.options.clone(),
        }
    }

    /// Splits into `(train, validation)` like Keras' `image_dataset_from_directory`
    /// (`validation_split`, `seed`): all samples are shuffled with `seed`, the validation set gets
    /// `floor(val_fraction * len)` of them, training the rest; each part keeps the folder order.
    /// The same seed always gives the same split (327 alpaca images at 0.2 → 262 / 65).
    /// Warnings stay with `self`.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if `val_fraction` is not in `[0, 1)`.
    pub fn split(
        &self,
        val_fraction: f64,
        seed: u64,
    ) -> Result<(ImageFolder, ImageFolder), DataError> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(DataError::InvalidArgument {
                path: self.root.clone(),
                message: format!("validation fraction {val_fraction} is not in [0, 1)"),
            });
        }
        let n = self.samples.len();
        let n_val = (val_fraction * n as f64) as usize;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut is_val = vec![false; n];
        for &i in &order[n - n_val..] {
            is_val[i] = true;
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (s, v) in self.samples.iter().zip(is_val) {
            if v {
                val.push(s.clone())
            } else {
                train.push(s.clone())
            }
        }
        Ok((self.with_samples(train), self.with_samples(val)))
    }
}

/// A training and a validation set with the same classes.
#[derive(Debug, Clone)]
pub struct TrainVal {
    /// Training set.
    pub train: ImageFolder,
    /// Validation set.
    pub val: ImageFolder,
    /// Whether the sets came from `root/train` and `root/val` (else from a split).
    pub presplit: bool,
}

impl TrainVal {
    /// Opens `root`: if it has `train/` and `val/` sub-folders (the hymenoptera layout) they are
    /// the two sets; otherwise `root/<class>/*` is split with [`ImageFolder::split`]
    /// (`val_fraction`, `seed`).
    ///
    /// # Errors
    /// Those of [`ImageFolder::with_options`] and [`ImageFolder::split`],
    /// [`DataError::ClassMismatch`] if `val/` has other classes than `train/`, and
    /// [`DataError::InvalidArgument`] if only one of `train/` and `val/` exists.
    pub fn open(
        root: impl AsRef<Path>,
        options: FolderOptions,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self, DataError> {
        let root = root.as_ref();
        let (t, v) = (root.join("train"), root.join("val"));
        if t.is_dir() && v.is_dir() {
            let train = ImageFolder::with_options(&t, options.clone())?;
            let val = ImageFolder::with_options(&v, options)?;
            if train.classes != val.classes {
                return Err(DataError::ClassMismatch {
                    path: v,
                    expected: train.classes.clone(),
                    found: val.classes.clone(),
                });
            }
            let sets = TrainVal {
                train,
                val,
                presplit: true,
            };
            sets.check_trainable()?;
            return Ok(sets);
        }
        if t.is_dir() != v.is_dir() {
            let (has, missing) = if t.is_dir() {
                (&t, "val")
            } else {
                (&v, "train")
            };
            return Err(DataError::InvalidArgument {
                path: has.clone(),
                message: format!(
                    "found this folder but no `{missing}` folder beside it: use root/train + root/val, or root/<class>"
                ),
            });
        }
        let all = ImageFolder::with_options(root, options)?;
        let (mut train, val) = all.split(val_fraction, seed)?;
        train.warnings = all.warnings;
        let sets = TrainVal {
            train,
            val,
            presplit: false,
        };
        sets.check_trainable()?;
        Ok(sets)
    }

    /// Checks that the sets can train and validate a classifier: at least two classes, and
    /// every class with at least one image in each set (a class missing from validation would
    /// make its accuracy unmeasurable; one missing from training, unlearnable). [`TrainVal::open`]
    /// runs it; call it again after taking subsets.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] naming the folder, the class and both counts.
    pub fn check_trainable(&self) -> Result<(), DataError> {
        let invalid = |message: String| DataError::InvalidArgument {
            path: self.train.root().to_path_buf(),
            message,
        };
        if self.train.classes().len() < 2 {
            return Err(invalid(format!(
                "a classifier needs at least 2 class folders, found {:?}",
                self.train.classes()
            )));
        }
        let how = if self.presplit {
            "add images to that class's folder".to_string()
        } else {
            "add images to that class or change the validation fraction".to_string()
        };
        for (class, (train, val)) in self.counts() {
            if train == 0 || val == 0 {
                return Err(invalid(format!(
                    "class '{class}' has {train} training and {val} validation images; \
                     each class needs at least one of each: {how}"
                )));
            }
        }
        Ok(())
    }

    /// [`ImageFolder::verify`] of both sets: every file decoded once, up front. Strict: an
    /// error listing every damaged file of either set. Lenient: those files dropped (one
    /// warning each) and the sets checked again ([`TrainVal::check_trainable`]). Returns how
    /// many files were dropped.
    ///
    /// # Errors
    /// [`DataError::Damaged`] (strict), or the error of [`TrainVal::check_trainable`] when the
    /// files left cannot train a classifier.
    pub fn verify(&mut self, workers: usize) -> Result<usize, DataError> {
        let dropped = match (self.train.verify(workers), self.val.verify(workers)) {
            (Ok(a), Ok(b)) => a + b,
            (
                Err(DataError::Damaged { path, mut files }),
                Err(DataError::Damaged { files: more, .. }),
            ) => {
                files.extend(more);
                let root = path.parent().map_or(path.clone(), Path::to_path_buf);
                return Err(DataError::Damaged { path: root, files });
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        if dropped > 0 {
            self.check_trainable()?;
        }
        Ok(dropped)
    }

    /// Files skipped in both sets, one warning each.
    pub fn warnings(&self) -> Vec<Warning> {
        self.train
            .warnings()
            .iter()
            .chain(self.val.warnings())
            .cloned()
            .collect()
    }

    /// Per-class counts of both sets: `class -> (train, val)`.
    pub fn counts(&self) -> BTreeMap<String, (usize, usize)> {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (c, n) in self.train.class_counts() {
            m.entry(c).or_default().0 = n;
        }
        for (c, n) in self.val.class_counts() {
            m.entry(c).or_default().1 = n;
        }
        m
    }
}

/// Indices (ascending) of the samples that do not decode, with their errors, decoded on
/// `workers` threads.
fn find_undecodable(
    samples: &[Sample],
    decode: &DecodeOptions,
    workers: usize,
) -> Vec<(usize, DataError)> {
    let chunk = samples.len().div_ceil(workers.max(1)).max(1);
    let mut failures: Vec<(usize, DataError)> = std::thread::scope(|scope| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .filter_map(|(i, s)| {
                            decode_rgb(&s.path, decode)
                                .err()
                                .map(|e| (c * chunk + i, e))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    failures.sort_by_key(|(i, _)| *i);
    failures
}
