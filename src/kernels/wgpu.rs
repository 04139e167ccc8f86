//! The wgpu backend on the convolution seam: burn's CubeCL kernels, with one fault of
//! burn-cubecl 0.21's matrix product on wgpu kept out of the crate's layers.
//!
//! The fault: a product whose summed dimension `K` is 8 modulo 16 (40, 72, 120, 168... terms)
//! is wrong at some sizes, in every operand layout and whatever the Vulkan driver's vector width
//! (`[2, 120, 72] · [2, 72, 784]`: errors of 40 % of the largest value; measured on lavapipe,
//! `K` = 4..200 in steps of 4 and odd sizes: every wrong product had `K` = 8 mod 16, and no
//! other). Autotuning picks kernels by speed, so a run may or may not meet it. MobileNetV3-Large
//! does (`features.5`: 40 → 120 channels; squeeze-and-excitation 672 → 168 → 672).
//!
//! The crate's own products (fully connected layers, squeeze-and-excitation, 1×1 convolutions)
//! go through [`matmul`](super::matmul), which pads such dimensions with zeros to a multiple of
//! 16 where [`ConvBackend::MATMUL_NEEDS_PADDING`]. burn's own 1×1 forward convolution autotunes
//! between a direct kernel and such a product (`conv_im2col_1x1`), so `Conv2d` runs 1×1
//! convolutions as the padded product on this backend, as it does while training everywhere.
//! Other convolutions, and every convolution gradient, use burn's kernels, which agree with the
//! CPU's for the five networks' shapes.
//!
//! The adapter also caps the size of one storage buffer (lavapipe: 128 MiB; cubecl aborts on a
//! larger allocation): [`ConvBackend::max_buffer_bytes`] reports the cap cubecl works with, and
//! batches are sized to it.

use super::ConvBackend;
use crate::backend::Wgpu;
use burn_wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::Runtime;

impl ConvBackend for Wgpu {
    const MATMUL_NEEDS_PADDING: bool = true;

    fn max_buffer_bytes(device: &WgpuDevice) -> Option<u64> {
        // The page size cubecl's memory manager allocates at most: the device's storage-buffer
        // binding limit, or the whole heap where the driver indexes buffers with 64 bits.
        Some(
            WgpuRuntime::client(device)
                .properties()
                .memory
                .max_page_size,
        )
    }
}
