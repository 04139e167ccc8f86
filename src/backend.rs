//! Backend type aliases and device selection.
//!
//! The CPU backend is chosen at compile time by a cargo feature: `flex` (default, burn-flex) or
//! `ndarray` (burn-ndarray); with both enabled, `flex` wins. `cuda` adds the NVIDIA backend.

use thiserror::Error;

/// The CPU backend compiled in (burn-flex by default, burn-ndarray with only `ndarray`).
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;
/// The CPU backend compiled in (burn-flex by default, burn-ndarray with only `ndarray`).
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type Cpu = burn::backend::NdArray<f32>;

/// The CPU backend with automatic differentiation, for training.
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The CUDA backend (f32).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
/// The CUDA backend with automatic differentiation, for training.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<Cuda>;

/// A device named on the command line or in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this index.
    Cuda(usize),
}

/// Why a device string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device '{0}': expected 'cpu', 'cuda' or 'cuda:N' (N = GPU index)")]
    Unknown(String),
    /// A CUDA device was asked for but the crate was built without the `cuda` feature.
    #[error("device '{0}' needs the `cuda` feature: rebuild with `--features cuda`")]
    CudaNotCompiled(String),
    /// The CPU was asked for but no CPU backend feature is enabled.
    #[error("device 'cpu' needs the `flex` or `ndarray` feature")]
    CpuNotCompiled,
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`, case-insensitively.
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Unknown(text.to_string())),
        }
    }

    /// Parses `text` as [`DeviceSpec::parse`] does and checks that its backend was compiled in:
    /// what a command-line `--device` flag needs.
    pub fn parse_compiled(text: &str) -> Result<Self, DeviceError> {
        let spec = Self::parse(text)?;
        spec.check_compiled()?;
        Ok(spec)
    }

    /// Checks that the backend for this device was compiled in.
    pub fn check_compiled(&self) -> Result<(), DeviceError> {
        match self {
            Self::Cpu if cfg!(any(feature = "flex", feature = "ndarray")) => Ok(()),
            Self::Cpu => Err(DeviceError::CpuNotCompiled),
            Self::Cuda(_) if cfg!(feature = "cuda") => Ok(()),
            Self::Cuda(i) => Err(DeviceError::CudaNotCompiled(format!("cuda:{i}"))),
        }
    }

    /// The CUDA device for this spec.
    #[cfg(feature = "cuda")]
    pub fn cuda_device(&self) -> Option<burn::backend::cuda::CudaDevice> {
        match self {
            Self::Cuda(i) => Some(burn::backend::cuda::CudaDevice::new(*i)),
            Self::Cpu => None,
        }
    }

    /// Name of the backend that serves this device, for reports.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Cuda(_) => "cuda",
            Self::Cpu if cfg!(feature = "flex") => "flex",
            Self::Cpu => "ndarray",
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
