//! Backend type aliases and device selection.
//!
//! The CPU backend is chosen at compile time by a cargo feature: `flex` (default, burn-flex) or
//! `ndarray` (burn-ndarray); with both enabled, `flex` wins. `cuda` adds the NVIDIA backend,
//! `wgpu` the GPUs that wgpu reaches (Vulkan, Metal, DX12: AMD, Intel, Apple, NVIDIA).

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

/// The wgpu backend (f32): burn's CubeCL kernels compiled to WGSL, run through Vulkan (Linux,
/// Windows, Android), Metal (macOS) or DX12 (Windows), with fusion and autotuning.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;
/// The wgpu backend with automatic differentiation, for training.
#[cfg(feature = "wgpu")]
pub type WgpuAutodiff = burn::backend::Autodiff<Wgpu>;

/// Has the process keep the memory it frees for its later allocations (glibc on Linux: no
/// block mapped afresh, none returned to the system) instead of mapping each large tensor in new
/// pages, which the kernel clears and faults in on their first write: MobileNetV2's inference at
/// batch 16 took about a quarter less time with it, a training step's peak memory 0.5–2 % more
/// (`BENCHMARKS.md`). Process-wide: the memory a program frees then stays its own until
/// `kernels::cpu::buffers::release`. The README's code, the crate's examples and its command
/// call it first thing; a library is left to choose (or `TRANSFER_VISION_REUSE_MEMORY=1`, read
/// before the first pass). First thing matters: glibc gives a thread that allocated before the
/// call a heap of its own, from which the largest tensors are still mapped afresh.
/// Returns whether it took effect (false off glibc, or without the `flex` CPU backend).
pub fn reuse_freed_memory() -> bool {
    #[cfg(feature = "flex")]
    {
        crate::kernels::cpu::buffers::reuse_freed_memory()
    }
    #[cfg(not(feature = "flex"))]
    {
        false
    }
}

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
            (_, DeviceSpec::Cpu | DeviceSpec::Wgpu(_)) => {
                Err(DeviceError::PrecisionNeedsCuda(self.to_string()))
            }
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
    /// A GPU through wgpu: `None` is wgpu's choice (a high-performance adapter first, or the one
    /// `CUBECL_WGPU_DEFAULT_DEVICE` names), `Some(n)` the `n`-th adapter `wgpu_adapters` lists
    /// (with the `wgpu` feature).
    Wgpu(Option<usize>),
}

/// Why a device string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    /// Not `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`.
    #[error(
        "unknown device '{0}': expected 'cpu', 'cuda', 'cuda:N' (N = CUDA GPU index), 'wgpu' or \
         'wgpu:N' (N = adapter index, as `transfer-vision devices` lists them)"
    )]
    Unknown(String),
    /// A CUDA device was asked for but the crate was built without the `cuda` feature.
    #[error("device '{0}' needs the `cuda` feature: rebuild with `--features cuda`")]
    CudaNotCompiled(String),
    /// A wgpu device was asked for but the crate was built without the `wgpu` feature.
    #[error("device '{0}' needs the `wgpu` feature: rebuild with `--features wgpu`")]
    WgpuNotCompiled(String),
    /// A wgpu device was asked of a spec that names another backend.
    #[error("device '{0}' is not a wgpu device")]
    NotWgpu(String),
    /// wgpu found no adapter at all (no Vulkan / Metal / DX12 driver).
    #[error(
        "device '{0}': wgpu found no GPU adapter (on Linux, install the Vulkan loader and a \
         driver, e.g. Debian's libvulkan1 with mesa-vulkan-drivers)"
    )]
    NoWgpuAdapter(String),
    /// `wgpu:N` with no `N`-th adapter, or one that cannot be chosen by index.
    #[error("device '{device}': {why}; the adapters wgpu lists here: {adapters}")]
    WgpuAdapter {
        /// The device string asked for.
        device: String,
        /// What is wrong with the index.
        why: String,
        /// The adapters, one `N: name (type, backend)` each.
        adapters: String,
    },
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
    /// Parses `cpu`, `cuda` (GPU 0), `cuda:N`, `wgpu` (wgpu's choice) or `wgpu:N` (the `N`-th
    /// adapter of `wgpu_adapters`), case-insensitively.
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        let lower = text.trim().to_ascii_lowercase();
        let index = |prefix: &str| lower.strip_prefix(prefix).and_then(|n| n.parse().ok());
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu(None)),
            _ => index("cuda:")
                .map(Self::Cuda)
                .or_else(|| index("wgpu:").map(|n| Self::Wgpu(Some(n))))
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
            Self::Wgpu(_) if cfg!(feature = "wgpu") => Ok(()),
            Self::Wgpu(_) => Err(DeviceError::WgpuNotCompiled(self.to_string())),
        }
    }

    /// The CUDA device for this spec.
    #[cfg(feature = "cuda")]
    pub fn cuda_device(&self) -> Option<burn::backend::cuda::CudaDevice> {
        match self {
            Self::Cuda(i) => Some(burn::backend::cuda::CudaDevice::new(*i)),
            Self::Cpu | Self::Wgpu(_) => None,
        }
    }

    /// The wgpu device for this spec, checked against the adapters present (wgpu itself would
    /// panic on a missing one).
    #[cfg(feature = "wgpu")]
    pub fn wgpu_device(&self) -> Result<burn::backend::wgpu::WgpuDevice, DeviceError> {
        match self {
            Self::Wgpu(index) => wgpu_device(*index, &self.to_string()),
            Self::Cpu | Self::Cuda(_) => Err(DeviceError::NotWgpu(self.to_string())),
        }
    }

    /// Name of the backend that serves this device, for reports.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Cuda(_) => "cuda",
            Self::Wgpu(_) => "wgpu",
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
            Self::Wgpu(None) => write!(f, "wgpu"),
            Self::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
        }
    }
}

/// One GPU adapter that wgpu offers, as `--device wgpu:N` numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgpuAdapter {
    /// The `N` of `wgpu:N`.
    pub index: usize,
    /// The adapter's name, e.g. `AMD Radeon RX 7600` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (a software driver) or `Other`.
    pub device_type: String,
    /// The graphics API: `Vulkan`, `Metal`, `Dx12`...
    pub backend: String,
    /// Driver name and version, as the driver reports them.
    pub driver: String,
}

impl std::fmt::Display for WgpuAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wgpu:{}: {} ({}, {}",
            self.index, self.name, self.device_type, self.backend
        )?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// The adapters wgpu finds for the graphics API burn uses on this system (Vulkan on Linux and
/// Windows, Metal on macOS), in the order `wgpu:N` numbers them; empty when there is no driver.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapters() -> Vec<WgpuAdapter> {
    describe_adapters(wgpu_adapter_infos())
}

/// [`WgpuAdapter`]s of `infos`, numbered in their order.
#[cfg(feature = "wgpu")]
fn describe_adapters(infos: Vec<wgpu::AdapterInfo>) -> Vec<WgpuAdapter> {
    infos
        .into_iter()
        .enumerate()
        .map(|(index, info)| {
            let driver = [info.driver, info.driver_info]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            WgpuAdapter {
                index,
                name: info.name,
                device_type: format!("{:?}", info.device_type),
                backend: format!("{:?}", info.backend),
                driver,
            }
        })
        .collect()
}

/// What wgpu reports of each adapter for burn's automatic graphics API, listed as cubecl-wgpu
/// lists them when it picks one.
#[cfg(feature = "wgpu")]
fn wgpu_adapter_infos() -> Vec<wgpu::AdapterInfo> {
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: AutoGraphicsApi::backend().into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    block_on(instance.enumerate_adapters(AutoGraphicsApi::backend().into()))
        .iter()
        .map(wgpu::Adapter::get_info)
        .collect()
}

/// Runs a future that native wgpu resolves without waiting (adapter enumeration) to its end.
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// The cubecl device that selects adapter `index` (or wgpu's default), after checking it exists.
///
/// cubecl-wgpu numbers adapters per type (`DiscreteGpu(k)` is the `k`-th discrete GPU), so the
/// `index`-th adapter of the list becomes its type and its rank among adapters of that type.
#[cfg(feature = "wgpu")]
fn wgpu_device(
    index: Option<usize>,
    name: &str,
) -> Result<burn::backend::wgpu::WgpuDevice, DeviceError> {
    use burn::backend::wgpu::WgpuDevice;
    let infos = wgpu_adapter_infos();
    if infos.is_empty() {
        return Err(DeviceError::NoWgpuAdapter(name.to_string()));
    }
    let Some(index) = index else {
        return Ok(WgpuDevice::DefaultDevice);
    };
    let types: Vec<wgpu::DeviceType> = infos.iter().map(|info| info.device_type).collect();
    let refuse = |why: String| DeviceError::WgpuAdapter {
        device: name.to_string(),
        why,
        adapters: describe_adapters(infos.clone())
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    };
    let Some(&device_type) = types.get(index) else {
        return Err(refuse(format!("there is no adapter {index}")));
    };
    let rank = types[..index].iter().filter(|t| **t == device_type).count();
    match device_type {
        wgpu::DeviceType::DiscreteGpu => Ok(WgpuDevice::DiscreteGpu(rank)),
        wgpu::DeviceType::IntegratedGpu => Ok(WgpuDevice::IntegratedGpu(rank)),
        wgpu::DeviceType::VirtualGpu => Ok(WgpuDevice::VirtualGpu(rank)),
        // cubecl-wgpu opens the first software adapter for `Cpu`.
        wgpu::DeviceType::Cpu if rank == 0 => Ok(WgpuDevice::Cpu),
        other => Err(refuse(format!(
            "adapter {index} ({other:?}) cannot be chosen by index; use 'wgpu' with \
             CUBECL_WGPU_DEFAULT_DEVICE"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda(0)),
            ("gpu", DeviceSpec::Cuda(0)),
            ("cuda:2", DeviceSpec::Cuda(2)),
            ("wgpu", DeviceSpec::Wgpu(None)),
            (" Wgpu:1 ", DeviceSpec::Wgpu(Some(1))),
        ] {
            assert_eq!(DeviceSpec::parse(text), Ok(spec.clone()), "{text}");
            assert_eq!(DeviceSpec::parse(&spec.to_string()), Ok(spec));
        }
        for bad in ["tpu", "wgpu:", "wgpu:x", "wgpu:-1", "cuda:", "wgpu1"] {
            assert_eq!(
                DeviceSpec::parse(bad),
                Err(DeviceError::Unknown(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(DeviceSpec::Wgpu(None).backend_name(), "wgpu");
    }

    #[test]
    fn only_cuda_computes_in_reduced_precision() {
        for spec in [
            DeviceSpec::Cpu,
            DeviceSpec::Wgpu(None),
            DeviceSpec::Wgpu(Some(0)),
        ] {
            assert_eq!(
                Precision::F16.check_device(&spec),
                Err(DeviceError::PrecisionNeedsCuda("f16".into()))
            );
            assert_eq!(Precision::F32.check_device(&spec), Ok(()));
        }
        assert_eq!(Precision::Bf16.check_device(&DeviceSpec::Cuda(0)), Ok(()));
    }

    #[test]
    fn a_backend_not_compiled_in_says_which_feature_builds_it() {
        let wgpu = DeviceSpec::Wgpu(Some(3)).check_compiled();
        if cfg!(feature = "wgpu") {
            assert_eq!(wgpu, Ok(()));
        } else {
            let message = wgpu.map_err(|e| e.to_string()).unwrap_err();
            assert!(
                message.contains("wgpu:3") && message.contains("--features wgpu"),
                "{message}"
            );
        }
    }
}
