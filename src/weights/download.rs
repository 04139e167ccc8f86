//! Pretrained weights and the hymenoptera data set from the internet (cargo feature `download`,
//! off by default).
//!
//! - [`Pretrained`] lists the ONNX model zoo files this crate knows, with their size and sha256
//!   (taken from the zoo's Git LFS pointers). [`fetch`] returns the cached copy when it is there
//!   and intact, and otherwise downloads it with a progress bar, verifies size and sha256, and
//!   moves it into place atomically: an interrupted or corrupt download never leaves a file under
//!   the final name, and never replaces a previous file.
//! - [`fetch_hymenoptera`] downloads the PyTorch tutorial's ants / bees archive and extracts it
//!   (refusing entries that would land outside the target folder). No checksum is pinned for that
//!   archive: its size and sha256 are not published, so only its structure is checked.
//! - [`fetch_url`] is the lower-level call: any `https://`, `http://` or `file://` URL to a file,
//!   optionally checked against a size and sha256.
//!
//! Files go to [`cache_dir`]: `$TRANSFER_VISION_HOME` if set, else `weights/` under the current
//! directory if that folder exists, else the user cache folder (`$XDG_CACHE_HOME/transfer-vision`
//! or `~/.cache/transfer-vision`).
//!
//! Without network access every call fails with [`DownloadError::Unreachable`], whose message says
//! how to get the file by hand: the URL, where to put the file, and the sha256 to check.
//!
//! ```no_run
//! use transfer_vision::weights::download::{Pretrained, fetch};
//!
//! let path = fetch(Pretrained::MobileNetV2)?;
//! println!("weights in {}", path.display());
//! # Ok::<(), transfer_vision::weights::download::DownloadError>(())
//! ```

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Where the ONNX model zoo's files are served from; [`Pretrained::zoo_path`] is relative to it.
pub const ONNX_ZOO_BASE: &str = "https://github.com/onnx/models/raw/main/";

/// The PyTorch transfer-learning tutorial's ants / bees data set (about 45 MiB). No size or
/// checksum is pinned for it: the tutorial publishes none.
pub const HYMENOPTERA_URL: &str = "https://download.pytorch.org/tutorial/hymenoptera_data.zip";

/// The folder that [`HYMENOPTERA_URL`]'s archive holds (with `train/` and `val/` inside).
pub const HYMENOPTERA_DIR: &str = "hymenoptera_data";

/// Environment variable naming the cache folder; it overrides every default.
pub const HOME_ENV: &str = "TRANSFER_VISION_HOME";

/// Environment variable replacing [`ONNX_ZOO_BASE`] (a mirror of the zoo, e.g. behind a proxy);
/// files are still checked against their pinned size and sha256.
pub const ZOO_BASE_ENV: &str = "TRANSFER_VISION_ONNX_ZOO_BASE";

/// Environment variable replacing [`HYMENOPTERA_URL`] (a mirror of the archive).
pub const HYMENOPTERA_URL_ENV: &str = "TRANSFER_VISION_HYMENOPTERA_URL";

/// `$name` when set and not empty, else `default`.
fn url_from_env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Pretrained ImageNet weights that [`fetch`] can download, from the ONNX model zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pretrained {
    /// ONNX model zoo MobileNetV2 1.0 (`mobilenetv2-12.onnx`, opset 12, BatchNorm folded into
    /// the convolutions); ImageNet mean/std input.
    MobileNetV2,
    /// ONNX model zoo ResNet18 v1 (`resnet18-v1-7.onnx`, opset 7); ImageNet mean/std input.
    ResNet18V1,
}

impl Pretrained {
    /// Every known entry.
    pub const ALL: [Pretrained; 2] = [Pretrained::MobileNetV2, Pretrained::ResNet18V1];

    /// The entry holding ImageNet weights for the architecture named `model` (a
    /// [`ModelSpec`](crate::models::ModelSpec) name: `mobilenet_v2`, `resnet18`), if the zoo has
    /// one.
    pub fn for_model(model: &str) -> Option<Self> {
        match model {
            "mobilenet_v2" => Some(Pretrained::MobileNetV2),
            "resnet18" => Some(Pretrained::ResNet18V1),
            _ => None,
        }
    }

    /// The file's path in the ONNX model zoo repository, relative to [`ONNX_ZOO_BASE`].
    pub fn zoo_path(self) -> &'static str {
        match self {
            Pretrained::MobileNetV2 => {
                "validated/vision/classification/mobilenet/model/mobilenetv2-12.onnx"
            }
            Pretrained::ResNet18V1 => {
                "validated/vision/classification/resnet/model/resnet18-v1-7.onnx"
            }
        }
    }

    /// The name the file is cached under (the last part of [`Pretrained::zoo_path`]).
    pub fn file_name(self) -> &'static str {
        let path = self.zoo_path();
        path.rsplit('/').next().unwrap_or(path)
    }

    /// The full download URL: under [`ONNX_ZOO_BASE`], or under `$TRANSFER_VISION_ONNX_ZOO_BASE`
    /// ([`ZOO_BASE_ENV`]) when set.
    pub fn url(self) -> String {
        let base = url_from_env(ZOO_BASE_ENV, ONNX_ZOO_BASE);
        let slash = if base.ends_with('/') { "" } else { "/" };
        format!("{base}{slash}{}", self.zoo_path())
    }

    /// The file's size in bytes.
    pub fn size(self) -> u64 {
        match self {
            Pretrained::MobileNetV2 => 13_964_571,
            Pretrained::ResNet18V1 => 46_820_737,
        }
    }

    /// The file's sha256, as lowercase hex.
    pub fn sha256(self) -> &'static str {
        match self {
            Pretrained::MobileNetV2 => {
                "c0c3f76d93fa3fd6580652a45618618a220fced18babf65774ed169de0432ad5"
            }
            Pretrained::ResNet18V1 => {
                "4e8f8653e7a2222b3904cc3fe8e304cd8b339ce1d05fd24688162f86fb6df52c"
            }
        }
    }
}

/// Everything that can go wrong fetching a file. Every message names the URL and / or the file
/// concerned, and what is wrong.
#[derive(Debug, Error)]
pub enum DownloadError {
    /// The server or file could not be reached (no network, DNS failure, refused connection,
    /// missing `file://` source). `how` says how to get the file by hand.
    #[error("cannot reach {url}: {reason}. {how}")]
    Unreachable {
        /// The URL asked for.
        url: String,
        /// Why it could not be reached.
        reason: String,
        /// How to get the file by hand (URL, where to put it, checksum to verify).
        how: String,
    },
    /// The server answered with an HTTP error status.
    #[error("{url}: the server answered HTTP {status} {status_text}. {how}")]
    Http {
        /// The URL asked for.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The status line's text.
        status_text: String,
        /// How to get the file by hand.
        how: String,
    },
    /// The URL's scheme is not one of `https://`, `http://` or `file://`.
    #[error("{url}: unsupported URL (use https://, http:// or file:///absolute/path)")]
    UnsupportedUrl {
        /// The URL given.
        url: String,
    },
    /// The transfer broke off, or ended before the announced length: nothing was kept.
    #[error(
        "{url}: download incomplete, got {received} bytes{}: {reason}; nothing was kept",
        total.map(|t| format!(" of {t}")).unwrap_or_default()
    )]
    Incomplete {
        /// The URL asked for.
        url: String,
        /// Bytes received before the transfer stopped.
        received: u64,
        /// The length the server announced, when it did.
        total: Option<u64>,
        /// What happened.
        reason: String,
    },
    /// The download's size is not the expected one: it was discarded.
    #[error(
        "{url}: expected {expected} bytes, got {actual}; the download was discarded and {} left as it was",
        dest.display()
    )]
    SizeMismatch {
        /// The URL asked for.
        url: String,
        /// The file that was to be written.
        dest: PathBuf,
        /// The expected size in bytes.
        expected: u64,
        /// The size received (or announced by the server).
        actual: u64,
    },
    /// The download's sha256 is not the expected one: it was discarded.
    #[error(
        "{url}: sha256 mismatch, expected {expected}, got {actual}; the download was discarded and {} left as it was",
        dest.display()
    )]
    ChecksumMismatch {
        /// The URL asked for.
        url: String,
        /// The file that was to be written.
        dest: PathBuf,
        /// The expected sha256 (hex).
        expected: String,
        /// The sha256 of what was received (hex).
        actual: String,
    },
    /// Reading or writing a local file or folder failed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// A zip archive could not be read, or does not hold what it should.
    #[error("{}: bad zip archive: {reason}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A zip entry would be written outside the target folder (or is a link): nothing was
    /// extracted.
    #[error(
        "{}: refusing to extract entry {entry:?} into {}: {reason}; nothing was extracted",
        archive.display(),
        dest.display()
    )]
    UnsafeZipEntry {
        /// The archive.
        archive: PathBuf,
        /// The target folder.
        dest: PathBuf,
        /// The entry's name as stored in the archive.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No cache folder could be determined.
    #[error(
        "no cache folder for downloads: set {HOME_ENV} to a writable folder (or HOME / \
         XDG_CACHE_HOME), or create weights/ in the current directory"
    )]
    NoCacheDir,
}

/// What [`fetch_url`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The file, now complete (and verified when a checksum was given).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, as lowercase hex.
    pub sha256: String,
    /// `true` when it was transferred now, `false` when an intact cached copy was used.
    pub downloaded: bool,
}

/// The folder downloads are cached in: `$TRANSFER_VISION_HOME` if set, else `weights/` under the
/// current directory if it exists, else `$XDG_CACHE_HOME/transfer-vision`, else
/// `~/.cache/transfer-vision`. It is created when something is written into it.
pub fn cache_dir() -> Result<PathBuf, DownloadError> {
    cache_dir_from(|name| std::env::var_os(name), Path::new("weights").is_dir())
}

/// [`cache_dir`] with the environment lookup and the "does `weights/` exist" answer supplied by
/// the caller (for embedding and tests).
pub fn cache_dir_from(
    env: impl Fn(&str) -> Option<OsString>,
    weights_folder_exists: bool,
) -> Result<PathBuf, DownloadError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(home) = var(HOME_ENV) {
        return Ok(PathBuf::from(home));
    }
    if weights_folder_exists {
        return Ok(PathBuf::from("weights"));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("transfer-vision"));
    }
    var("HOME")
        .or_else(|| var("USERPROFILE"))
        .map(|home| PathBuf::from(home).join(".cache").join("transfer-vision"))
        .ok_or(DownloadError::NoCacheDir)
}

/// Returns `entry`'s file in [`cache_dir`], downloading it first unless an intact copy (right
/// size and sha256) is already there. See [`fetch_url`].
pub fn fetch(entry: Pretrained) -> Result<PathBuf, DownloadError> {
    fetch_in(entry, &cache_dir()?)
}

/// [`fetch`] into the folder `dir` instead of [`cache_dir`].
pub fn fetch_in(entry: Pretrained, dir: &Path) -> Result<PathBuf, DownloadError> {
    let dest = dir.join(entry.file_name());
    let fetched = fetch_url(&entry.url(), &dest, Some((entry.size(), entry.sha256())))?;
    Ok(fetched.path)
}

/// Downloads `url` (`https://`, `http://`, or `file:///absolute/path`, which is copied) to
/// `dest`, creating its folder.
///
/// With `expected = Some((size, sha256))`: an existing `dest` of that size and sha256 is used as it
/// is (nothing is transferred); otherwise the transfer is checked against both, and a mismatch is
/// an error that leaves `dest` as it was. With `None` the file is always transferred and not
/// checked (its sha256 is in the result).
///
/// The data go to a temporary file in `dest`'s folder, which is flushed to disk and then renamed
/// over `dest`; on any error the temporary file is removed. A progress bar is drawn on stderr when
/// it is a terminal.
pub fn fetch_url(
    url: &str,
    dest: &Path,
    expected: Option<(u64, &str)>,
) -> Result<Fetched, DownloadError> {
    let expected = expected.map(|(size, sha)| (size, sha.trim().to_ascii_lowercase()));
    if let Some((size, sha)) = &expected
        && let Some(cached) = check_cached(dest, *size, sha)?
    {
        log::debug!("{}: cached copy is intact", dest.display());
        return Ok(cached);
    }
    let how = manual_instructions(url, dest, expected.as_ref().map(|(s, h)| (*s, h.as_str())));
    let (mut source, total) = open(url, &how)?;
    if let (Some((size, _)), Some(total)) = (&expected, total)
        && *size != total
    {
        return Err(DownloadError::SizeMismatch {
            url: url.to_owned(),
            dest: dest.to_owned(),
            expected: *size,
            actual: total,
        });
    }

    let dir = parent_dir(dest);
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "cannot create the folder", e))?;
    let name = file_name(dest);
    let mut tmp = TempFile::create(&dir, &name)?;
    log::info!("downloading {url} to {}", dest.display());
    let bar = progress_bar(total.or(expected.as_ref().map(|(s, _)| *s)), &name);

    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(DownloadError::Incomplete {
                    url: url.to_owned(),
                    received,
                    total,
                    reason: e.to_string(),
                });
            }
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        tmp.write_all(chunk)?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();

    if let Some(total) = total
        && received != total
    {
        return Err(DownloadError::Incomplete {
            url: url.to_owned(),
            received,
            total: Some(total),
            reason: "the transfer ended before the announced length".to_owned(),
        });
    }
    let actual = hex(&hasher.finalize());
    if let Some((size, sha)) = &expected {
        if received != *size {
            return Err(DownloadError::SizeMismatch {
                url: url.to_owned(),
                dest: dest.to_owned(),
                expected: *size,
                actual: received,
            });
        }
        if actual != *sha {
            return Err(DownloadError::ChecksumMismatch {
                url: url.to_owned(),
                dest: dest.to_owned(),
                expected: sha.clone(),
                actual,
            });
        }
    }
    tmp.persist(dest)?;
    log::info!("{}: {received} bytes, sha256 {actual}", dest.display());
    Ok(Fetched {
        path: dest.to_owned(),
        size: received,
        sha256: actual,
        downloaded: true,
    })
}

/// The sha256 of the file at `path`, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DownloadError> {
    let file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher).map_err(|e| io_err(path, "cannot read", e))?;
    Ok(hex(&hasher.finalize()))
}

/// The text that tells a person how to get `url` into `dest` by hand (and how to check it); it is
/// what [`DownloadError::Unreachable`] and [`DownloadError::Http`] carry for [`fetch_url`].
pub fn manual_instructions(url: &str, dest: &Path, expected: Option<(u64, &str)>) -> String {
    let dest_s = dest.display();
    let mut how = format!(
        "To get the file by hand: on a machine with internet access download {url} \
         (e.g. `curl -L -o {name} '{url}'`), copy it to {dest_s}, ",
        name = file_name(dest),
    );
    match expected {
        Some((size, sha)) => how.push_str(&format!(
            "and check it with `sha256sum {dest_s}`, which must print {sha} (the file has {size} \
             bytes)."
        )),
        None => how.push_str(
            "and check that it came from that URL (no checksum is pinned for this file).",
        ),
    }
    if dest.extension().is_some_and(|e| e == "onnx") {
        how.push_str(
            " Alternatively, `python weights/export_torchvision.py` (needs `pip install torch \
             torchvision onnx`) exports torchvision's ImageNet weights to weights/mobilenet_v2.onnx \
             and weights/resnet18.onnx.",
        );
    }
    how
}

/// Downloads and extracts the hymenoptera (ants / bees) data set into [`cache_dir`], unless
/// `hymenoptera_data/` is already there; returns that folder (with `train/` and `val/`). See
/// [`fetch_zip_folder`]. No checksum is pinned for the archive.
pub fn fetch_hymenoptera() -> Result<PathBuf, DownloadError> {
    fetch_hymenoptera_in(&cache_dir()?)
}

/// [`fetch_hymenoptera`] into the folder `dir` instead of [`cache_dir`]. The archive comes from
/// [`HYMENOPTERA_URL`], or `$TRANSFER_VISION_HYMENOPTERA_URL` ([`HYMENOPTERA_URL_ENV`]) when set.
pub fn fetch_hymenoptera_in(dir: &Path) -> Result<PathBuf, DownloadError> {
    let url = url_from_env(HYMENOPTERA_URL_ENV, HYMENOPTERA_URL);
    fetch_zip_folder(&url, dir, HYMENOPTERA_DIR)
}

/// Returns `dir/folder`, first fetching the zip archive at `url` and extracting it unless that
/// folder already exists. The archive must hold `folder/` at its top level.
///
/// The archive is fetched to `dir/folder.zip` (an archive already there, e.g. one put there by
/// hand, is used as it is) and extracted with [`extract_zip`] into a temporary folder in `dir`,
/// whose `folder` is then renamed into place: a half-extracted data set is never seen under the
/// final name. An archive this call downloaded is deleted afterwards.
pub fn fetch_zip_folder(url: &str, dir: &Path, folder: &str) -> Result<PathBuf, DownloadError> {
    let target = dir.join(folder);
    if target.is_dir() {
        return Ok(target);
    }
    let archive = dir.join(format!("{folder}.zip"));
    let downloaded = if archive.is_file() {
        log::info!("extracting {} (already there)", archive.display());
        false
    } else {
        fetch_url(url, &archive, None).map_err(|e| with_zip_instructions(e, dir, folder))?;
        true
    };

    let staging = TempDir::create(dir, folder)?;
    extract_zip(&archive, &staging.path)?;
    let extracted = staging.path.join(folder);
    if !extracted.is_dir() {
        return Err(DownloadError::Zip {
            path: archive,
            reason: format!("it has no top-level folder {folder}/"),
        });
    }
    if let Err(e) = fs::rename(&extracted, &target) {
        // Another process may have finished the same extraction first.
        if !target.is_dir() {
            return Err(io_err(
                &target,
                "cannot move the extracted folder into place",
                e,
            ));
        }
    }
    drop(staging);
    if downloaded && let Err(e) = fs::remove_file(&archive) {
        log::warn!("{}: cannot remove the archive: {e}", archive.display());
    }
    Ok(target)
}

/// Extracts the zip archive at `archive` into the folder `dest` (created if needed); returns the
/// number of files written.
///
/// Every entry name is checked before anything is written: absolute paths, `..` components, drive
/// prefixes, NUL bytes and symbolic links are refused with [`DownloadError::UnsafeZipEntry`], and
/// nothing is extracted. An existing symbolic link under `dest` is never followed. Only stored
/// and deflated entries are supported.
pub fn extract_zip(archive: &Path, dest: &Path) -> Result<usize, DownloadError> {
    let file = File::open(archive).map_err(|e| io_err(archive, "cannot open", e))?;
    let zip_err = |e: zip::result::ZipError| DownloadError::Zip {
        path: archive.to_owned(),
        reason: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;

    // First pass: names only, so that an unsafe entry stops everything before any write.
    let mut plan = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(zip_err)?;
        let name = entry.name().to_owned();
        let unsafe_entry = |reason| DownloadError::UnsafeZipEntry {
            archive: archive.to_owned(),
            dest: dest.to_owned(),
            entry: name.clone(),
            reason,
        };
        if entry.is_symlink() {
            return Err(unsafe_entry("symbolic links are not extracted"));
        }
        let rel = safe_relative_path(&name).map_err(unsafe_entry)?;
        plan.push((i, rel, entry.is_dir(), entry.size()));
    }

    fs::create_dir_all(dest).map_err(|e| io_err(dest, "cannot create the folder", e))?;
    let root = fs::canonicalize(dest).map_err(|e| io_err(dest, "cannot resolve", e))?;
    let mut files = 0;
    for (i, rel, is_dir, size) in plan {
        let out = root.join(&rel);
        if is_dir {
            create_inside(&root, &out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            create_inside(&root, parent)?;
        }
        if fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io_err(
                &out,
                "refusing to write through a symbolic link",
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        let mut entry = zip.by_index(i).map_err(zip_err)?;
        let mut writer = BufWriter::new(
            File::create(&out).map_err(|e| io_err(&out, "cannot create the file", e))?,
        );
        // Never write more than the entry declares (guards against lying headers).
        let written = io::copy(&mut (&mut entry).take(size.saturating_add(1)), &mut writer)
            .map_err(|e| DownloadError::Zip {
                path: archive.to_owned(),
                reason: format!("entry {rel:?}: {e}"),
            })?;
        if written != size {
            return Err(DownloadError::Zip {
                path: archive.to_owned(),
                reason: format!("entry {rel:?} holds {written} bytes, its header says {size}"),
            });
        }
        writer
            .flush()
            .map_err(|e| io_err(&out, "cannot write the file", e))?;
        files += 1;
    }
    Ok(files)
}

/// Turns a zip entry name into a relative path of normal components, or says why it is unsafe.
fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("the name contains a NUL byte");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("absolute paths are not allowed");
    }
    let mut rel = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err("`..` would leave the target folder"),
            p if p.contains(':') => return Err("drive or stream prefixes are not allowed"),
            p => rel.push(p),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err("the name is empty");
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("the path is not a plain relative path");
    }
    Ok(rel)
}

/// Creates `dir` (and its parents) and checks that it resolves inside `root`.
fn create_inside(root: &Path, dir: &Path) -> Result<(), DownloadError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create the folder", e))?;
    let real = fs::canonicalize(dir).map_err(|e| io_err(dir, "cannot resolve", e))?;
    if !real.starts_with(root) {
        return Err(io_err(
            dir,
            "refusing to extract outside the target folder (symbolic link)",
            io::Error::from(io::ErrorKind::PermissionDenied),
        ));
    }
    Ok(())
}

/// Replaces the generic manual instructions of an unreachable / HTTP error by the data set's.
fn with_zip_instructions(err: DownloadError, dir: &Path, folder: &str) -> DownloadError {
    let how_for = |url: &str| {
        format!(
            "To get it by hand: on a machine with internet access download {url} (e.g. `curl -L \
             -O '{url}'`; no checksum is pinned for this archive), then either unzip it into {dir} \
             so that {target}/train and {target}/val exist, or put the archive at {archive} and \
             run this again.",
            dir = dir.display(),
            target = dir.join(folder).display(),
            archive = dir.join(format!("{folder}.zip")).display(),
        )
    };
    match err {
        DownloadError::Unreachable { url, reason, .. } => DownloadError::Unreachable {
            how: how_for(&url),
            url,
            reason,
        },
        DownloadError::Http {
            url,
            status,
            status_text,
            ..
        } => DownloadError::Http {
            how: how_for(&url),
            url,
            status,
            status_text,
        },
        other => other,
    }
}

/// Returns the intact cached file at `dest`, `None` when it is missing or differs.
fn check_cached(dest: &Path, size: u64, sha: &str) -> Result<Option<Fetched>, DownloadError> {
    let Ok(meta) = fs::metadata(dest) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() != size {
        log::warn!(
            "{}: cached file has {} bytes, expected {size}; fetching it again",
            dest.display(),
            meta.len()
        );
        return Ok(None);
    }
    let actual = sha256_file(dest)?;
    if actual != sha {
        log::warn!(
            "{}: cached file has sha256 {actual}, expected {sha}; fetching it again",
            dest.display()
        );
        return Ok(None);
    }
    Ok(Some(Fetched {
        path: dest.to_owned(),
        size,
        sha256: actual,
        downloaded: false,
    }))
}

type Source = Box<dyn Read + Send + Sync>;

/// Opens `url` for reading; returns the reader and the announced length, when known.
fn open(url: &str, how: &str) -> Result<(Source, Option<u64>), DownloadError> {
    let unreachable = |reason: String| DownloadError::Unreachable {
        url: url.to_owned(),
        reason,
        how: how.to_owned(),
    };
    if let Some(rest) = url.strip_prefix("file://") {
        let path = PathBuf::from(percent_decode(rest));
        if !path.is_absolute() {
            return Err(DownloadError::UnsupportedUrl {
                url: url.to_owned(),
            });
        }
        let file = File::open(&path).map_err(|e| unreachable(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| unreachable(e.to_string()))?
            .len();
        return Ok((Box::new(file), Some(len)));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(DownloadError::UnsupportedUrl {
            url: url.to_owned(),
        });
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("transfer-vision/", env!("CARGO_PKG_VERSION")))
        .build();
    match agent.get(url).call() {
        Ok(response) => {
            let len = response
                .header("Content-Length")
                .and_then(|v| v.trim().parse::<u64>().ok());
            Ok((response.into_reader(), len))
        }
        Err(ureq::Error::Status(status, response)) => Err(DownloadError::Http {
            url: url.to_owned(),
            status,
            status_text: response.status_text().to_owned(),
            how: how.to_owned(),
        }),
        Err(ureq::Error::Transport(t)) => {
            if t.kind() == ureq::ErrorKind::InvalidUrl || t.kind() == ureq::ErrorKind::UnknownScheme
            {
                return Err(DownloadError::UnsupportedUrl {
                    url: url.to_owned(),
                });
            }
            let mut reason = t.kind().to_string();
            if let Some(message) = t.message() {
                reason.push_str(&format!(": {message}"));
            }
            if let Some(source) = std::error::Error::source(&t) {
                reason.push_str(&format!(": {source}"));
            }
            if let Some(at) = t.url().filter(|u| u.as_str() != url) {
                reason.push_str(&format!(" (at {at})"));
            }
            Err(unreachable(reason))
        }
    }
}

/// Decodes `%XX` escapes in a `file://` URL's path (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn progress_bar(total: Option<u64>, name: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        }
        None => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        }
    };
    bar.set_message(name.to_owned());
    bar
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".to_owned())
}

fn io_err(path: &Path, action: &'static str, source: io::Error) -> DownloadError {
    DownloadError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// A unique name in `dir` for temporary work on `name`.
fn temp_name(dir: &Path, name: &str, suffix: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.{suffix}", std::process::id()))
}

/// A file being downloaded: removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl TempFile {
    fn create(dir: &Path, name: &str) -> Result<Self, DownloadError> {
        let path = temp_name(dir, name, "part");
        let file = File::create(&path)
            .map_err(|e| io_err(&path, "cannot create the temporary file", e))?;
        Ok(TempFile {
            path,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        match self.writer.as_mut() {
            Some(w) => w
                .write_all(data)
                .map_err(|e| io_err(&self.path, "cannot write", e)),
            None => Ok(()),
        }
    }

    /// Flushes to disk and renames over `dest` (then persists the rename, best effort).
    fn persist(mut self, dest: &Path) -> Result<(), DownloadError> {
        if let Some(writer) = self.writer.take() {
            let file = writer
                .into_inner()
                .map_err(|e| io_err(&self.path, "cannot write", e.into_error()))?;
            file.sync_all()
                .map_err(|e| io_err(&self.path, "cannot flush to disk", e))?;
        }
        fs::rename(&self.path, dest)
            .map_err(|e| io_err(dest, "cannot move the download into place", e))?;
        if let Ok(d) = File::open(parent_dir(dest)) {
            let _ = d.sync_all();
        }
        // Renamed: nothing left to clean up.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.writer.take());
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A folder for extraction: removed (with what is left in it) on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(dir: &Path, name: &str) -> Result<Self, DownloadError> {
        let path = temp_name(dir, name, "extract");
        fs::create_dir_all(&path)
            .map_err(|e| io_err(&path, "cannot create the temporary folder", e))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
