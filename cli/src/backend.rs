//! The backend that `--device` and `--precision` pick, for training (autodiff) and inference.

use clap::Args;
use transfer_vision::backend::{DeviceSpec, Precision};

use crate::error::CliError;

#[cfg(not(any(feature = "flex", feature = "ndarray", feature = "cuda")))]
compile_error!("transfer-vision-cli needs a backend feature: flex (default), ndarray or cuda");

/// `--device` and `--precision`.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
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

/// Calls `$run::<B>($args.., device, &spec)` with the autodiff backend `$device` (a
/// [`DeviceArgs`]) picks: CUDA at the precision asked for, else the CPU backend compiled in.
macro_rules! with_autodiff_backend {
    ($device:expr, $run:ident($($arg:expr),*)) => {{
        #[allow(unused_variables)]
        let (spec, precision) = $device.parse()?;
        match (&spec, precision) {
            #[cfg(feature = "cuda")]
            (transfer_vision::backend::DeviceSpec::Cuda(_), transfer_vision::backend::Precision::F16) => {
                $run::<transfer_vision::backend::CudaF16Autodiff>($($arg,)* spec.cuda_device().unwrap_or_default(), &spec)
            }
            #[cfg(feature = "cuda")]
            (transfer_vision::backend::DeviceSpec::Cuda(_), transfer_vision::backend::Precision::Bf16) => {
                $run::<transfer_vision::backend::CudaBf16Autodiff>($($arg,)* spec.cuda_device().unwrap_or_default(), &spec)
            }
            #[cfg(feature = "cuda")]
            (transfer_vision::backend::DeviceSpec::Cuda(_), _) => {
                $run::<transfer_vision::backend::CudaAutodiff>($($arg,)* spec.cuda_device().unwrap_or_default(), &spec)
            }
            #[cfg(any(feature = "flex", feature = "ndarray"))]
            (transfer_vision::backend::DeviceSpec::Cpu, _) => {
                $run::<transfer_vision::backend::CpuAutodiff>($($arg,)* Default::default(), &spec)
            }
            #[allow(unreachable_patterns)]
            _ => Err($crate::error::CliError::Usage(format!(
                "--device {spec}: this build has no backend for it"
            ))),
        }
    }};
}
pub(crate) use with_autodiff_backend;

/// Calls `$run::<B>($args.., device, &spec)` with the inference backend `$device` picks.
macro_rules! with_backend {
    ($device:expr, $run:ident($($arg:expr),*)) => {{
        #[allow(unused_variables)]
        let (spec, precision) = $device.parse()?;
        match (&spec, precision) {
            #[cfg(feature = "cuda")]
            (transfer_vision::backend::DeviceSpec::Cuda(_), transfer_vision::backend::Precision::F16) => {
                $run::<transfer_vision::backend::CudaF16>($($arg,)* spec.cuda_device().unwrap_or_default(), &spec)
            }
            #[cfg(feature = "cuda")]
            (transfer_vision::backend::DeviceSpec::Cuda(_), transfer_vision::backend::Precision::Bf16) => {
                $run::<transfer_vision::backend::CudaBf16>($($arg,)* spec.cuda_device().unwrap_or_default(), &spec)
            }
            #[cfg(feature = "cuda")]
            (transfer_vision::backend::DeviceSpec::Cuda(_), _) => {
                $run::<transfer_vision::backend::Cuda>($($arg,)* spec.cuda_device().unwrap_or_default(), &spec)
            }
            #[cfg(any(feature = "flex", feature = "ndarray"))]
            (transfer_vision::backend::DeviceSpec::Cpu, _) => {
                $run::<transfer_vision::backend::Cpu>($($arg,)* Default::default(), &spec)
            }
            #[allow(unreachable_patterns)]
            _ => Err($crate::error::CliError::Usage(format!(
                "--device {spec}: this build has no backend for it"
            ))),
        }
    }};
}
pub(crate) use with_backend;
