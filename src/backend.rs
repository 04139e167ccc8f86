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

/// The CUDA backend computing in IEEE half precision (f16): mixed-precision inference and
/// training (`--precision f16`).
#[cfg(feature = "cuda")]
pub type CudaF16 = burn::backend::Cuda<burn::tensor::f16, i32>;
/// [`CudaF16`] with automatic differentiation.
#[cfg(feature = "cuda")]
pub type CudaF16Autodiff = burn::backend::Autodiff<CudaF16>;
/// The CUDA backend computing in bfloat16 (`--precision bf16`): f32's range, 8 bits of mantissa.
#[cfg(feature = "cuda")]
pub type CudaBf16 = burn::backend::Cuda<burn::tensor::bf16, i32>;
/// [`CudaBf16`] with automatic differentiation.
#[cfg(feature = "cuda")]
pub type CudaBf16Autodiff = burn::backend::Autodiff<CudaBf16>;

/// Floating-point precision of the tensors a backend computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats (the default, and the only choice on the CPU).
    #[default]
    F32,
    /// IEEE half precision, CUDA only.
    F16,
    /// bfloat16, CUDA only.
    Bf16,
}

impl Precision {
    /// Parses `f32`, `f16` (or `fp16`, `half`) and `bf16`, case-insensitively.
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "half" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(DeviceError::UnknownPrecision(text.to_string())),
        }
    }

    /// Checks that `device` computes at this precision: reduced precision needs CUDA.
    pub fn check_device(self, device: &DeviceSpec) -> Result<(), DeviceError> {
        match (self, device) {
            (Self::F32, _) | (_, DeviceSpec::Cuda(_)) => Ok(()),
            (_, DeviceSpec::Cpu) => Err(DeviceError::PrecisionNeedsCuda(self.to_string())),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

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
    /// Not `f32`, `f16` or `bf16`.
    #[error("unknown precision '{0}': expected 'f32', 'f16' or 'bf16'")]
    UnknownPrecision(String),
    /// Reduced precision was asked for on the CPU.
    #[error("precision {0} needs a CUDA device (the CPU backends compute in f32)")]
    PrecisionNeedsCuda(String),
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
