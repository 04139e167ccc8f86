//! Saving and reloading (fine-tuned) models: weights, architecture and class names in one file.
//!
//! Layout of a `.tvm` file: the 8-byte magic `TVMODEL1`, a little-endian `u64` header length, a
//! JSON header ([`SavedHeader`]: architecture config, class names, metadata, payload length and
//! SHA-256), then the payload: burn's named MessagePack record at full precision. The header's
//! length and checksum let a torn or altered file be refused with a clear error instead of being
//! half-loaded; writes are atomic (temporary file + rename), so an interrupted save keeps the
//! previous file intact.

use std::collections::BTreeMap;
use std::path::Path;

use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::WeightsError;
use crate::io::atomic_write;
use crate::models::{Architecture, ModelSpec};

const MAGIC: &[u8; 8] = b"TVMODEL1";
/// Headers larger than this are refused as corrupt before any allocation.
const MAX_HEADER: u64 = 16 << 20;

/// What a saved model carries besides its weights.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Class names, index = class id.
    pub class_names: Vec<String>,
    /// Free-form metadata (e.g. `preprocessing`, `image_size`).
    pub metadata: BTreeMap<String, String>,
}

/// The JSON header of a saved model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHeader {
    /// Format version (1).
    pub version: u32,
    /// Architecture and its configuration.
    pub spec: ModelSpec,
    /// Class names and metadata.
    pub info: ModelInfo,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// SHA-256 of the payload, lowercase hex.
    pub payload_sha256: String,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Saves `model` with `info` to `path`, atomically.
pub fn save_model<B: Backend, M: Architecture<B>>(
    model: &M,
    info: &ModelInfo,
    path: &Path,
) -> Result<(), WeightsError> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let payload =
        Recorder::<B>::record(&recorder, model.clone().into_record(), ()).map_err(|e| {
            WeightsError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("cannot encode: {e}"),
            }
        })?;
    let header = SavedHeader {
        version: 1,
        spec: model.spec(),
        info: info.clone(),
        payload_len: payload.len() as u64,
        payload_sha256: sha256_hex(&payload),
    };
    let header = serde_json::to_vec(&header).map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode header: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(16 + header.len() + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&payload);
    atomic_write(path, &bytes).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and verifies the header and payload of a saved model file.
pub fn read_saved(path: &Path) -> Result<(SavedHeader, Vec<u8>), WeightsError> {
    let corrupt = |reason: String| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(corrupt(
            "not a transfer-vision model file (bad magic)".into(),
        ));
    }
    let header_len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
    if header_len > MAX_HEADER || 16 + header_len > bytes.len() as u64 {
        return Err(corrupt(format!(
            "header length {header_len} exceeds the file ({} bytes)",
            bytes.len()
        )));
    }
    let header_end = 16 + header_len as usize;
    let header: SavedHeader = serde_json::from_slice(&bytes[16..header_end])
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    if header.version != 1 {
        return Err(corrupt(format!(
            "unsupported format version {}",
            header.version
        )));
    }
    let payload = &bytes[header_end..];
    if payload.len() as u64 != header.payload_len {
        return Err(corrupt(format!(
            "payload is {} bytes but the header says {} (truncated or appended file)",
            payload.len(),
            header.payload_len
        )));
    }
    if sha256_hex(payload) != header.payload_sha256 {
        return Err(corrupt(
            "payload checksum mismatch (the file was altered or torn)".into(),
        ));
    }
    Ok((header.clone(), payload.to_vec()))
}

/// Loads a model saved by [`save_model`], rebuilding its architecture from the file.
pub fn load_model<B: Backend, M: Architecture<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<(M, ModelInfo), WeightsError> {
    let (header, payload) = read_saved(path)?;
    let model = M::from_spec(&header.spec, device).ok_or_else(|| WeightsError::Architecture {
        path: path.to_path_buf(),
        expected: M::NAME.into(),
        found: header.spec.name().into(),
    })?;
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let record =
        Recorder::<B>::load(&recorder, payload, device).map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("weights do not match the stored architecture: {e}"),
        })?;
    Ok((model.load_record(record), header.info))
}
