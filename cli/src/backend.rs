//! The backend that `--device` and `--precision` pick, for training (autodiff) and inference.

use clap::Args;
use transfer_vision::backend::{DeviceSpec, Precision};

use crate::error::CliError;

#[cfg(not(any(
    feature = "flex",
    feature = "ndarray",
    feature = "cuda",
    feature = "wgpu"
)))]
compile_error!(
    "transfer-vision-cli needs a backend feature: flex (default), ndarray, cuda or wgpu"
);

/// `--device` and `--precision`.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (`transfer-vision devices` lists the
    /// adapters); CUDA and wgpu need a build with `--features cuda` / `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Float precision: `f32`; on CUDA also `f16` or `bf16` (mixed precision).
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

impl DeviceArgs {
    /// The device and precision asked for, checked against the backends compiled in.
    pub fn parse(&self) -> Result<(DeviceSpec, Precision), CliError> {
        let spec = DeviceSpec::parse_compiled(&self.device)?;
        let precision = Precision::parse(&self.precision)?;
        precision.check_device(&spec)?;
        Ok((spec, precision))
    }
}

/// Calls `$run::<B>($args.., device, &spec)` with `B` the backend `$device` (a [`DeviceArgs`])
/// picks among the five given: CUDA at the precision asked for, wgpu, else the CPU backend
/// compiled in.
macro_rules! dispatch {
    ($device:expr, $run:ident($($arg:expr),*), $cpu:ident, $cuda:ident, $cuda_f16:ident, $cuda_bf16:ident, $wgpu:ident) => {{
        use transfer_vision::backend::DeviceSpec;
        #[allow(unused_variables)]
        let (spec, precision) = $device.parse()?;
        match (&spec, precision) {
            #[cfg(feature = "cuda")]
            (DeviceSpec::Cuda(_), transfer_vision::backend::Precision::F16) => $run::<transfer_vision::backend::$cuda_f16>(
                $($arg,)* spec.cuda_device().unwrap_or_default(), &spec,
            ),
            #[cfg(feature = "cuda")]
            (DeviceSpec::Cuda(_), transfer_vision::backend::Precision::Bf16) => $run::<transfer_vision::backend::$cuda_bf16>(
                $($arg,)* spec.cuda_device().unwrap_or_default(), &spec,
            ),
            #[cfg(feature = "cuda")]
            (DeviceSpec::Cuda(_), _) => $run::<transfer_vision::backend::$cuda>(
                $($arg,)* spec.cuda_device().unwrap_or_default(), &spec,
            ),
            #[cfg(feature = "wgpu")]
            (DeviceSpec::Wgpu(_), _) => $run::<transfer_vision::backend::$wgpu>(
                $($arg,)* spec.wgpu_device()?, &spec,
            ),
            #[cfg(any(feature = "flex", feature = "ndarray"))]
            (DeviceSpec::Cpu, _) => {
                $run::<transfer_vision::backend::$cpu>($($arg,)* Default::default(), &spec)
            }
            #[allow(unreachable_patterns)]
            _ => Err($crate::error::CliError::Usage(format!(
                "--device {spec}: this build has no backend for it"
            ))),
        }
    }};
}
pub(crate) use dispatch;

/// [`dispatch`] among the autodiff backends, for training.
macro_rules! with_autodiff_backend {
    ($device:expr, $run:ident($($arg:expr),*)) => {
        $crate::backend::dispatch!(
            $device, $run($($arg),*), CpuAutodiff, CudaAutodiff, CudaF16Autodiff, CudaBf16Autodiff,
            WgpuAutodiff
        )
    };
}
pub(crate) use with_autodiff_backend;

/// [`dispatch`] among the inference backends.
macro_rules! with_backend {
    ($device:expr, $run:ident($($arg:expr),*)) => {
        $crate::backend::dispatch!($device, $run($($arg),*), Cpu, Cuda, CudaF16, CudaBf16, Wgpu)
    };
}
pub(crate) use with_backend;
