//! `transfer-vision devices`: the devices this build can run on, as `--device` names them.

use std::process::ExitCode;

use clap::Args;

use crate::error::CliError;

/// `transfer-vision devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {}

/// Prints one line per device `--device` accepts in this build: the CPU backend, CUDA when
/// compiled in, and every adapter wgpu finds (`wgpu:N`).
pub fn run(_args: &DevicesArgs) -> Result<ExitCode, CliError> {
    if cfg!(any(feature = "flex", feature = "ndarray")) {
        let backend = if cfg!(feature = "flex") {
            "flex"
        } else {
            "ndarray"
        };
        println!("cpu: the CPU ({backend} backend, every core)");
    }
    if cfg!(feature = "cuda") {
        println!("cuda, cuda:N: NVIDIA GPU N through CUDA (N from 0, as nvidia-smi lists them)");
    }
    #[cfg(feature = "wgpu")]
    {
        let adapters = transfer_vision::backend::wgpu_adapters();
        if adapters.is_empty() {
            println!(
                "wgpu: no adapter found (no Vulkan / Metal / DX12 driver; on Linux install \
                 libvulkan1 and a driver, e.g. mesa-vulkan-drivers)"
            );
        } else {
            println!("wgpu: wgpu's choice among the adapters below (a discrete GPU first)");
            for adapter in adapters {
                println!("{adapter}");
            }
        }
    }
    if !cfg!(feature = "cuda") {
        println!("(CUDA: rebuild with --features cuda)");
    }
    if !cfg!(feature = "wgpu") {
        println!("(wgpu, for Vulkan / Metal / DX12 GPUs: rebuild with --features wgpu)");
    }
    Ok(ExitCode::SUCCESS)
}
