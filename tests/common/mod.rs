//! Helpers shared by the integration tests: locating `../shared` and reading `.npy` goldens.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a file under `../shared` (relative to the crate root).
///
/// Returns `None` when the file is missing so that tests users run from a clone without
/// `../shared` can skip; under CI (`CI=true`) a missing file is a test failure instead.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true but ../shared/{rel} is missing: this test needs the shared fixtures");
    }
    eprintln!("skipping: ../shared/{rel} not found");
    None
}

/// A dense array read from a `.npy` file.
#[derive(Debug, Clone)]
pub struct Npy<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn read_npy_raw(path: &std::path::Path) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let major = bytes[6];
    let (header_len, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = String::from_utf8_lossy(&bytes[start..start + header_len]).to_string();
    assert!(
        header.contains("'fortran_order': False"),
        "{}: fortran order",
        path.display()
    );
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .unwrap_or_else(|| panic!("{}: no descr", path.display()))
        .to_string();
    let shape_str = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("{}: no shape", path.display()));
    let shape = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("shape"))
        .collect();
    (descr, shape, bytes[start + header_len..].to_vec())
}

/// Reads a little-endian float32 `.npy` file.
pub fn npy_f32(path: &std::path::Path) -> Npy<f32> {
    let (descr, shape, body) = read_npy_raw(path);
    assert_eq!(descr, "<f4", "{}: expected float32", path.display());
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Npy { shape, data }
}

/// Reads a little-endian int64 `.npy` file.
pub fn npy_i64(path: &std::path::Path) -> Npy<i64> {
    let (descr, shape, body) = read_npy_raw(path);
    assert_eq!(descr, "<i8", "{}: expected int64", path.display());
    let data = body
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Npy { shape, data }
}
