//! The single-file container behind saved models and checkpoints.
//!
//! Layout: the 8-byte magic `TVMODEL1`, a little-endian `u64` header length, a JSON header, then
//! the named binary sections back to back. The header lists each section's length and SHA-256,
//! so a torn or altered file is refused with a clear error instead of being half-loaded. Writes
//! are atomic (temporary file + rename): an interrupted write keeps the previous file intact.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::WeightsError;
use crate::io::atomic_write;

const MAGIC: &[u8; 8] = b"TVMODEL1";
/// Version 2: architecture configurations record whether BatchNorms hold statistics, and saved
/// models carry their typed preprocessing.
const VERSION: u32 = 2;
/// Headers larger than this are refused as corrupt before any allocation.
const MAX_HEADER: u64 = 64 << 20;

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Envelope<H> {
    kind: String,
    version: u32,
    header: H,
    sections: Vec<SectionInfo>,
}

#[derive(Serialize, Deserialize)]
struct SectionInfo {
    name: String,
    len: u64,
    sha256: String,
}

/// Writes `header` and `sections` to `path` atomically as a container of `kind`.
pub(crate) fn write_container<H: Serialize>(
    path: &Path,
    kind: &str,
    header: &H,
    sections: &[(&str, &[u8])],
) -> Result<(), WeightsError> {
    let envelope = Envelope {
        kind: kind.to_string(),
        version: VERSION,
        header,
        sections: sections
            .iter()
            .map(|(name, bytes)| SectionInfo {
                name: name.to_string(),
                len: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            })
            .collect(),
    };
    let json = serde_json::to_vec(&envelope).map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode header: {e}"),
    })?;
    let total = 16 + json.len() + sections.iter().map(|(_, b)| b.len()).sum::<usize>();
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, section) in sections {
        bytes.extend_from_slice(section);
    }
    atomic_write(path, &bytes).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a container of `kind`, verifying every section's length and checksum.
pub(crate) fn read_container<H: DeserializeOwned>(
    path: &Path,
    kind: &str,
) -> Result<(H, BTreeMap<String, Vec<u8>>), WeightsError> {
    parse_container(&read_file(path)?, path, kind)
}

/// Reads `path` whole, an I/O error naming it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, WeightsError> {
    std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a container of `kind` held in memory (as [`read_container`]; `path` names it in errors).
pub(crate) fn parse_container<H: DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    kind: &str,
) -> Result<(H, BTreeMap<String, Vec<u8>>), WeightsError> {
    let corrupt = |reason: String| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a transfer-vision file (bad magic)".into()));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[8..16]);
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 16 + header_len > bytes.len() as u64 {
        return Err(corrupt(format!(
            "header length {header_len} exceeds the file ({} bytes)",
            bytes.len()
        )));
    }
    let mut offset = 16 + header_len as usize;
    // Kind and version first: a header of another kind or version may not parse as `H`.
    let outline: Envelope<serde::de::IgnoredAny> = serde_json::from_slice(&bytes[16..offset])
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    if outline.kind != kind {
        return Err(corrupt(format!("holds a {}, not a {kind}", outline.kind)));
    }
    if outline.version != VERSION {
        return Err(corrupt(format!(
            "unsupported format version {} (written by another transfer-vision release; this \
             one reads version {VERSION})",
            outline.version
        )));
    }
    let envelope: Envelope<H> = serde_json::from_slice(&bytes[16..offset])
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    // Checked: a crafted header may list lengths whose sum overflows.
    let expected = envelope
        .sections
        .iter()
        .try_fold(0u64, |sum, s| sum.checked_add(s.len));
    if expected != Some((bytes.len() - offset) as u64) {
        return Err(corrupt(format!(
            "sections hold {} bytes but the header says {} (truncated or appended file)",
            bytes.len() - offset,
            expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        )));
    }
    let mut sections = BTreeMap::new();
    for info in envelope.sections {
        let end = offset + info.len as usize;
        let data = &bytes[offset..end];
        if sha256_hex(data) != info.sha256 {
            return Err(corrupt(format!(
                "section '{}' fails its checksum (the file was altered or torn)",
                info.name
            )));
        }
        sections.insert(info.name, data.to_vec());
        offset = end;
    }
    Ok((envelope.header, sections))
}
