//! The crate's CPU convolution kernels against burn's own implementation (burn-flex's forward,
//! burn's generic input and weight gradients): every convolution shape of MobileNetV2 and
//! ResNet18/34 at 224 px, and random shapes around them (strides, paddings, groups, odd sizes,
//! batch 1), at every SIMD level this processor runs. Then the same through `Autodiff<Flex>`:
//! the gradients a training step sees.
#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, ModuleOps};
use burn::tensor::{Distribution, Tensor, TensorPrimitive};
use rand::{Rng, SeedableRng};
use transfer_vision::kernels::cpu::{self, ConvGeometry, SimdLevel};
use transfer_vision::kernels::{ConvActivation, ConvBackend};

/// `[batch, c_in, c_out, kernel, stride, padding, groups, size]`.
type Case = [usize; 8];

/// Every convolution of torchvision's MobileNetV2 and ResNet18/34 at 224 px, batch 2.
fn network_cases() -> Vec<Case> {
    let mut cases = vec![
        // MobileNetV2: stem, then (expand 1×1, depthwise 3×3, project 1×1) per block shape.
        [2, 3, 32, 3, 2, 1, 1, 224],
        [2, 32, 32, 3, 1, 1, 32, 112],
        [2, 32, 16, 1, 1, 0, 1, 112],
        [2, 320, 1280, 1, 1, 0, 1, 7],
    ];
    // (input channels, expanded channels, output channels, stride of the depthwise, size)
    for (c_in, hidden, c_out, stride, size) in [
        (16, 96, 24, 2, 112usize),
        (24, 144, 24, 1, 56),
        (24, 144, 32, 2, 56),
        (32, 192, 32, 1, 28),
        (32, 192, 64, 2, 28),
        (64, 384, 64, 1, 14),
        (64, 384, 96, 1, 14),
        (96, 576, 96, 1, 14),
        (96, 576, 160, 2, 14),
        (160, 960, 160, 1, 7),
        (160, 960, 320, 1, 7),
    ] {
        cases.push([2, c_in, hidden, 1, 1, 0, 1, size]);
        cases.push([2, hidden, hidden, 3, stride, 1, hidden, size]);
        cases.push([2, hidden, c_out, 1, 1, 0, 1, size.div_ceil(stride)]);
    }
    // ResNet18/34: stem, basic blocks, 1×1 stride-2 downsamples.
    cases.push([2, 3, 64, 7, 2, 3, 1, 224]);
    cases.push([2, 64, 64, 3, 1, 1, 1, 56]);
    for (c_in, c_out, size) in [(64, 128, 56), (128, 256, 28), (256, 512, 14)] {
        cases.push([2, c_in, c_out, 3, 2, 1, 1, size]);
        cases.push([2, c_out, c_out, 3, 1, 1, 1, size / 2]);
        cases.push([2, c_in, c_out, 1, 2, 0, 1, size]);
    }
    cases
}

/// Random shapes around those: kernels 1–7, strides 1–3, paddings up to the kernel, dense,
/// grouped and depthwise, sizes down to 1 and odd, batches of 1–3.
fn random_cases(count: usize) -> Vec<Case> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut cases = Vec::new();
    while cases.len() < count {
        let kernel = [1, 2, 3, 3, 5, 7][rng.random_range(0..6)];
        let stride = rng.random_range(1..=3);
        let padding = rng.random_range(0..=kernel / 2 + 1);
        let size = rng.random_range(1..=19);
        let base = rng.random_range(1..=9);
        let (c_in, c_out, groups) = match rng.random_range(0..3) {
            0 => (base, rng.random_range(1..=17), 1),
            1 => (base, base, base),
            _ => (2 * base, 2 * rng.random_range(1..=5), 2),
        };
        let case = [
            rng.random_range(1..=3),
            c_in,
            c_out,
            kernel,
            stride,
            padding,
            groups,
            size,
        ];
        if geometry(&case).is_some() {
            cases.push(case);
        }
    }
    cases
}

fn options(case: &Case) -> ConvOptions<2> {
    let [_, _, _, _, stride, padding, groups, _] = *case;
    ConvOptions::new([stride, stride], [padding, padding], [1, 1], groups)
}

fn geometry(case: &Case) -> Option<ConvGeometry> {
    let [n, c_in, c_out, k, _, _, groups, size] = *case;
    ConvGeometry::new(
        [n, c_in, size, size],
        [c_out, c_in / groups.max(1), k, k],
        &options(case),
    )
}

/// Random input, weight and bias of `case` on backend `B`.
fn random_operands<B: Backend>(
    case: &Case,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 1>) {
    let [n, c_in, c_out, k, _, _, groups, size] = *case;
    let normal = |sd| Distribution::Normal(0.0, sd);
    (
        Tensor::random([n, c_in, size, size], normal(1.0), device),
        Tensor::random([c_out, c_in / groups, k, k], normal(0.3), device),
        Tensor::random([c_out], normal(1.0), device),
    )
}

fn values<const D: usize>(t: &Tensor<Flex, D>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().expect("f32 tensor")
}

/// Largest absolute difference, relative to the reference's largest magnitude; infinite where
/// either side has a NaN (`f32::max` would pass over it).
fn relative_error(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "lengths");
    let scale = reference.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(reference).fold(0.0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() { f32::INFINITY } else { m.max(d) }
    });
    worst / scale
}

/// Runs `f` in a rayon pool of `threads` threads (the kernels split their work by the pool's
/// size).
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
        .install(f)
}

/// [`check_case`] for every case in rayon pools of 1, 2 and 3 threads (a batch smaller than the
/// pool takes the matrix product; larger ones split unevenly over the threads).
fn check_cases_in_pools_of_1_to_3_threads(cases: &[Case], levels: &[SimdLevel]) {
    for threads in [1, 2, 3] {
        in_pool(threads, || {
            for case in cases {
                check_case(case, levels);
            }
        });
    }
}

fn check_case(case: &Case, levels: &[SimdLevel]) {
    let device = Default::default();
    let g = geometry(case).expect("valid case");
    let [n, c_in, c_out, k, _, _, groups, size] = *case;
    let x = Tensor::<Flex, 4>::random(
        [n, c_in, size, size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let w = Tensor::<Flex, 4>::random(
        [c_out, c_in / groups, k, k],
        Distribution::Normal(0.0, 0.3),
        &device,
    );
    let b = Tensor::<Flex, 1>::random([c_out], Distribution::Normal(0.0, 1.0), &device);
    let dy = Tensor::<Flex, 4>::random(
        [n, c_out, g.oh, g.ow],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let prim = |t: &Tensor<Flex, 4>| t.clone().into_primitive().tensor();

    let y_ref = Tensor::<Flex, 4>::new(TensorPrimitive::Float(<Flex as ModuleOps<Flex>>::conv2d(
        prim(&x),
        prim(&w),
        Some(b.clone().into_primitive().tensor()),
        options(case),
    )));
    let dx_ref = Tensor::<Flex, 4>::new(TensorPrimitive::Float(
        <Flex as ModuleOps<Flex>>::conv2d_x_backward(prim(&x), prim(&w), prim(&dy), options(case)),
    ));
    let dw_ref = Tensor::<Flex, 4>::new(TensorPrimitive::Float(
        <Flex as ModuleOps<Flex>>::conv2d_weight_backward(
            prim(&x),
            prim(&w),
            prim(&dy),
            options(case),
        ),
    ));
    let (xs, ws, bs, dys) = (values(&x), values(&w), values(&b), values(&dy));
    for &level in levels {
        let what = format!("{case:?} at {level:?}");
        let y = cpu::conv2d_forward(&g, &xs, &ws, Some(&bs), level);
        let e = relative_error(&y, &values(&y_ref));
        assert!(e <= 1e-4, "forward {what}: relative error {e:e}");
        let dx = cpu::conv2d_input_grad(&g, &ws, &dys, level);
        let e = relative_error(&dx, &values(&dx_ref));
        assert!(e <= 1e-4, "input gradient {what}: relative error {e:e}");
        let dw = cpu::conv2d_weight_grad(&g, &xs, &dys, level);
        let e = relative_error(&dw, &values(&dw_ref));
        assert!(e <= 1e-4, "weight gradient {what}: relative error {e:e}");
    }
}

/// Depthwise rows of every width the forward pass's blocks treat differently (4 rows of one
/// vector up to 16 pixels, 2 rows of two up to 32, a map's last block of fewer rows, runs of up
/// to four vectors along a row, a masked last vector), with paddings from none to `k - 1`, at
/// strides 1 and 2 (read in place on AVX-512, from the padded phase planes at the other
/// levels), in pools of 1 to 3 threads.
#[test]
fn depthwise_rows_of_every_width_equal_burns_at_every_simd_level() {
    let mut cases = Vec::new();
    for size in [
        1, 2, 5, 6, 7, 10, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 70, 130,
    ] {
        for k in [3, 5] {
            for padding in [0, k / 2, k - 1] {
                for stride in [1, 2] {
                    let case = [2, 3, 3, k, stride, padding, 3, size];
                    if geometry(&case).is_some() {
                        cases.push(case);
                    }
                }
            }
        }
    }
    check_cases_in_pools_of_1_to_3_threads(&cases, &SimdLevel::supported());
}

#[test]
fn network_shapes_equal_burns_convolution_at_every_simd_level() {
    let levels = SimdLevel::supported();
    for case in network_cases() {
        check_case(&case, &levels);
    }
}

#[test]
fn random_shapes_equal_burns_convolution_at_every_simd_level() {
    let levels = SimdLevel::supported();
    for case in random_cases(300) {
        check_case(&case, &levels);
    }
}

#[test]
fn batch_one_splits_the_products_and_stays_exact() {
    // Batch 1 with more threads than images takes the split-product path where the direct
    // kernels have fewer than two blocks of 8 output channels per thread (or do not take the
    // shape); with more, they split the image's channel blocks over the threads instead
    // (`batch_one_splits_the_direct_kernels_channel_blocks_and_stays_exact`).
    in_pool(2, || {
        for case in [
            [1, 64, 64, 3, 1, 1, 1, 14],
            [1, 16, 24, 3, 1, 1, 1, 28],
            [1, 3, 16, 7, 2, 3, 1, 64],
            [1, 3, 32, 3, 2, 1, 1, 64],
            [1, 96, 96, 3, 2, 1, 96, 29],
        ] {
            let g = geometry(&case).expect("a valid case");
            assert!(
                !cpu::direct::splits_images(g.n, g.c_out) || !cpu::direct::covers(&g),
                "{case:?} splits over channel blocks"
            );
            assert!(!cpu::few_channels::covers_forward(&g), "{case:?}");
            check_case(&case, &[SimdLevel::current()]);
        }
    });
}

#[test]
fn batch_one_splits_the_direct_kernels_channel_blocks_and_stays_exact() {
    // Batch 1 (and 2 in a pool of 3) on the direct kernels, the row tiles (ResNet's 28×28 layer
    // in a pool of 2, its 4 blocks of 32 channels two per thread) and the stems' phase planes,
    // each image's blocks of output channels split over 2 or 3 threads: block counts that do
    // not divide evenly, a last block short of 8 channels, ResNet's 56×56 and 28×28 layers and
    // 7×7 stem; forward with the bias, and the input gradient (blocks of the input's channels).
    let cases: Vec<Case> = vec![
        [1, 64, 64, 3, 1, 1, 1, 56],
        [1, 128, 128, 3, 1, 1, 1, 28],
        [1, 3, 64, 7, 2, 3, 1, 64],
        [1, 52, 45, 3, 1, 1, 1, 33],
        [2, 48, 53, 5, 1, 2, 1, 30],
    ];
    for threads in [2, 3] {
        in_pool(threads, || {
            for case in &cases {
                let g = geometry(case).expect("a valid case");
                if g.n >= threads {
                    continue;
                }
                let stem = cpu::few_channels::covers_forward(&g);
                let row_tiles =
                    cpu::row_tiles::covers(&g) && cpu::row_tiles::splits_images(g.n, g.c_out, g.ow);
                assert!(
                    stem || row_tiles
                        || (cpu::direct::covers(&g) && cpu::direct::splits_images(g.n, g.c_out)),
                    "{case:?} in {threads} threads does not split over channel blocks"
                );
                check_case(case, &SimdLevel::supported());
            }
        });
    }
}

#[test]
fn images_sharing_one_product_stay_exact() {
    // Small output maps in batches of several images per thread: their im2col matrices side
    // by side in one product (forward, input gradient, weight gradient), in pools of 1–3
    // threads, so that products hold 1 to 8 images and some batches end in a shorter one; and
    // pointwise convolutions (160 → 960, 96 → 576), which keep one image per product there.
    let mut cases: Vec<Case> = vec![
        [8, 256, 256, 3, 1, 1, 1, 14],
        [8, 256, 512, 3, 2, 1, 1, 14],
        [8, 512, 512, 3, 1, 1, 1, 7],
        [8, 256, 512, 1, 2, 0, 1, 14],
        [7, 160, 960, 1, 1, 0, 1, 7],
        [5, 96, 576, 1, 1, 0, 1, 14],
        [6, 8, 12, 3, 2, 1, 2, 9],
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    for mut case in random_cases(30) {
        case[0] = rng.random_range(3..=9);
        cases.push(case);
    }
    check_cases_in_pools_of_1_to_3_threads(&cases, &[SimdLevel::current()]);
}

#[test]
fn direct_stride_one_convolutions_equal_burns_at_every_simd_level() {
    // Shapes the direct kernels take (maps 56 wide and more, where the row tiles stop): channels
    // not a multiple of their tiles (8 output channels forward, 32 output and 4 input channels
    // for the weight gradient), one input channel, kernels 2, 3 and 5, no padding (the input
    // gradient then pads by k - 1), odd widths; in pools of 1 to 3 threads (a batch smaller than
    // the pool takes the matrix product unless it has two blocks of 8 channels per thread to
    // split each image over).
    let cases: Vec<Case> = vec![
        [2, 5, 13, 3, 1, 1, 1, 57],
        [1, 1, 9, 5, 1, 2, 1, 60],
        [3, 7, 16, 3, 1, 0, 1, 58],
        [1, 16, 8, 2, 1, 1, 1, 56],
        [2, 9, 17, 5, 1, 0, 1, 60],
        [1, 64, 64, 3, 1, 1, 1, 56],
    ];
    for case in &cases {
        let g = geometry(case).expect("a valid case");
        assert!(
            cpu::direct::covers(&g),
            "{case:?} is not on the direct path"
        );
        assert!(!cpu::row_tiles::covers(&g), "{case:?} is on the row tiles");
        // Kernel rows of 3 taps: the weight gradient's tile too.
        assert_eq!(
            cpu::direct::covers_weight_grad(&g),
            case[3] == 3,
            "{case:?}"
        );
    }
    // Strided, grouped and narrow maps stay on the matrix product.
    for case in [
        [2, 64, 128, 3, 2, 1, 1, 56],
        [2, 8, 8, 3, 1, 1, 2, 56],
        [2, 256, 256, 3, 1, 1, 1, 14],
    ] {
        let g = geometry(&case).expect("a valid case");
        assert!(!cpu::direct::covers(&g), "{case:?} is on the direct path");
    }
    check_cases_in_pools_of_1_to_3_threads(&cases, &SimdLevel::supported());
}

#[test]
fn row_tile_convolutions_equal_burns_at_every_simd_level() {
    // Shapes the row-tile kernels take (maps 7 to 55 wide): output channels not a multiple of
    // the tile's 32, widths not a multiple of its runs of 7 (the last run moved left), an odd
    // number of rows (a last tile of one row, or of rows of two images), no padding (the input
    // gradient then pads by k - 1), kernels 3 and 5, ResNet's 7×7 stage; batches of 1 to 5 in
    // pools of 1 to 3 threads, so that images split unevenly over the threads (a batch smaller
    // than the pool takes the matrix product instead, unless its maps are 14 wide or more with
    // at least two blocks of 32 channels per thread: then each image's blocks are split over
    // the threads, as the first three cases do for the forward pass or the input gradient, a
    // last block partly filled). From 28 wide, 3×3 kernels' weight gradients run on the
    // direct kernel.
    let cases: Vec<Case> = vec![
        [1, 8, 200, 3, 1, 1, 1, 16],
        [1, 130, 64, 3, 1, 1, 1, 14],
        [2, 6, 224, 5, 1, 2, 1, 21],
        [3, 40, 48, 3, 1, 1, 1, 7],
        [2, 512, 512, 3, 1, 1, 1, 7],
        [1, 6, 33, 3, 1, 1, 1, 9],
        [5, 7, 20, 3, 1, 0, 1, 13],
        [2, 5, 37, 3, 1, 1, 1, 15],
        [3, 7, 16, 3, 1, 0, 1, 16],
        [1, 9, 40, 5, 1, 2, 1, 20],
        [5, 16, 33, 3, 1, 1, 1, 27],
        [1, 64, 64, 3, 1, 1, 1, 14],
        [3, 6, 35, 3, 1, 1, 1, 30],
        [2, 32, 64, 3, 1, 1, 1, 55],
    ];
    for case in &cases {
        let g = geometry(case).expect("a valid case");
        assert!(
            cpu::row_tiles::covers(&g),
            "{case:?} is not on the row tiles"
        );
        let wide_three = case[3] == 3 && case[7] >= 28;
        assert_eq!(cpu::direct::covers_weight_grad(&g), wide_three, "{case:?}");
    }
    // Maps narrower than a run of 7 (an output or, for the input gradient, an input), 56×56
    // maps and grouped convolutions go elsewhere, as do strided ones but for their forward pass
    // (`strided_row_tile_forward_passes_equal_burns_at_every_simd_level`).
    for case in [
        [2, 64, 64, 3, 1, 1, 1, 6],
        [2, 64, 64, 3, 1, 0, 1, 8],
        [2, 64, 64, 3, 1, 1, 1, 56],
        [2, 64, 128, 3, 2, 1, 1, 28],
        [2, 8, 8, 3, 1, 1, 2, 14],
    ] {
        let g = geometry(&case).expect("a valid case");
        assert!(!cpu::row_tiles::covers(&g), "{case:?} is on the row tiles");
    }
    check_cases_in_pools_of_1_to_3_threads(&cases, &SimdLevel::supported());
}

#[test]
fn strided_row_tile_forward_passes_equal_burns_at_every_simd_level() {
    // Stride-2 convolutions whose forward pass runs on the row tiles (outputs 7 wide and more,
    // more input channels than a stem): an odd input width (the last column unread), channels
    // not a multiple of 32, a 5×5 and a 7×7 kernel, ResNet's 64 → 128 and 256 → 512 stage
    // entries, one image split by channel blocks over the threads (the last case); their
    // gradients stay on the matrix product.
    let cases: Vec<Case> = vec![
        [2, 5, 64, 7, 2, 3, 1, 56],
        [2, 256, 512, 3, 2, 1, 1, 14],
        [3, 9, 35, 3, 2, 1, 1, 17],
        [3, 8, 32, 3, 2, 1, 1, 30],
        [2, 16, 40, 3, 2, 1, 1, 29],
        [1, 5, 33, 5, 2, 2, 1, 33],
        [2, 64, 128, 3, 2, 1, 1, 28],
        [1, 9, 192, 3, 2, 1, 1, 29],
    ];
    for case in &cases {
        let g = geometry(case).expect("a valid case");
        assert!(
            cpu::row_tiles::covers_forward(&g) && !cpu::row_tiles::covers(&g),
            "{case:?}: forward only on the row tiles"
        );
    }
    // Outputs narrower than 7 stay on the matrix product, and the stems are not taken here
    // (their forward pass runs on phase planes: `stem_forward_passes_on_phase_planes_...`).
    for case in [[2, 64, 128, 3, 2, 1, 1, 12], [2, 3, 64, 7, 2, 3, 1, 56]] {
        let g = geometry(&case).expect("a valid case");
        assert!(!cpu::row_tiles::covers_forward(&g), "{case:?}");
    }
    check_cases_in_pools_of_1_to_3_threads(&cases, &SimdLevel::supported());
}

#[test]
fn stem_forward_passes_on_phase_planes_equal_burns_at_every_simd_level() {
    // Convolutions over 1 to 4 input channels whose outputs sum at least 64 products (ResNet's
    // 7×7 stride-2 stem, 5×5 ones) run their forward pass on the stride-phase planes: strides 1
    // to 3, paddings 0 to 3, odd sizes (a last column or row no window reads), channels not a
    // multiple of the tile's 8, outputs from 16 wide, batches of 2 to 5 in pools of 1 to 3
    // threads (a batch smaller than the pool takes the matrix product).
    let cases: Vec<Case> = vec![
        [2, 3, 64, 7, 2, 3, 1, 64],
        [3, 3, 20, 7, 2, 3, 1, 41],
        [3, 4, 9, 5, 1, 2, 1, 19],
        [3, 3, 16, 5, 2, 0, 1, 37],
        [5, 2, 13, 7, 3, 1, 1, 58],
        [3, 3, 8, 5, 2, 2, 1, 32],
    ];
    for case in &cases {
        let g = geometry(case).expect("a valid case");
        assert!(
            in_pool(case[0], || cpu::few_channels::covers_forward(&g)),
            "{case:?} is not on the phase planes"
        );
    }
    // Too few products per output (MobileNetV2's 3×3 stem), outputs narrower than 16 and more
    // than four input channels stay on the matrix product.
    for case in [
        [2, 3, 32, 3, 2, 1, 1, 224],
        [2, 3, 64, 7, 2, 3, 1, 30],
        [2, 5, 64, 7, 2, 3, 1, 64],
    ] {
        let g = geometry(&case).expect("a valid case");
        assert!(!cpu::few_channels::covers_forward(&g), "{case:?}");
    }
    check_cases_in_pools_of_1_to_3_threads(&cases, &SimdLevel::supported());
}

#[test]
fn unsupported_shapes_are_left_to_burn() {
    let dilated = ConvOptions::new([1, 1], [1, 1], [2, 2], 1);
    assert!(ConvGeometry::new([1, 3, 8, 8], [4, 3, 3, 3], &dilated).is_none());
    let too_small = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    assert!(ConvGeometry::new([1, 3, 2, 2], [4, 3, 3, 3], &too_small).is_none());
    // Through the backend they still compute, by burn-flex's own code.
    let device = Default::default();
    let x = Tensor::<Flex, 4>::random([1, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<Flex, 4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    let reference = burn::tensor::module::conv2d(x.clone(), w.clone(), None, dilated.clone());
    let y = Flex::conv2d_forward(
        x.into_primitive().tensor(),
        w.into_primitive().tensor(),
        None,
        dilated,
    );
    let y = Tensor::<Flex, 4>::new(TensorPrimitive::Float(y));
    assert_eq!(y.dims(), [1, 4, 6, 6]);
    assert_eq!(y.to_data(), reference.to_data());
}

/// Gradients of `sum(conv(x, w, b) * r)` through `Autodiff<Flex>`: the crate's seam against
/// burn's `conv2d`, for input, weight and bias.
#[test]
fn autodiff_gradients_through_the_seam_equal_burns() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    for case in [
        [2, 8, 12, 3, 1, 1, 1, 9],
        [2, 16, 16, 3, 2, 1, 16, 11],
        [1, 6, 4, 1, 1, 0, 2, 5],
    ] {
        let g = geometry(&case).expect("valid");
        let [n, _, c_out, ..] = case;
        let (x0, w0, b0) = random_operands::<A>(&case, &device);
        let r = Tensor::<A, 4>::random(
            [n, c_out, g.oh, g.ow],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let grads_of = |ours: bool| {
            let (x, w, b) = (
                x0.clone().require_grad(),
                w0.clone().require_grad(),
                b0.clone().require_grad(),
            );
            let y = if ours {
                Tensor::<A, 4>::new(TensorPrimitive::Float(A::conv2d_forward(
                    x.clone().into_primitive().tensor(),
                    w.clone().into_primitive().tensor(),
                    Some(b.clone().into_primitive().tensor()),
                    options(&case),
                )))
            } else {
                burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options(&case))
            };
            let grads = (y * r.clone()).sum().backward();
            let get = |t: Vec<f32>| t;
            (
                get(x
                    .grad(&grads)
                    .expect("x grad")
                    .to_data()
                    .to_vec::<f32>()
                    .expect("f32")),
                get(w
                    .grad(&grads)
                    .expect("w grad")
                    .to_data()
                    .to_vec::<f32>()
                    .expect("f32")),
                get(b
                    .grad(&grads)
                    .expect("b grad")
                    .to_data()
                    .to_vec::<f32>()
                    .expect("f32")),
            )
        };
        let (ours, reference) = (grads_of(true), grads_of(false));
        for (name, a, b) in [
            ("x", &ours.0, &reference.0),
            ("weight", &ours.1, &reference.1),
            ("bias", &ours.2, &reference.2),
        ] {
            let e = relative_error(a, b);
            assert!(
                e <= 1e-4,
                "{name} gradient of {case:?}: relative error {e:e}"
            );
        }
    }
}

/// SiLU through the seam (the crate's vectorised kernel on burn-flex, its own backward under
/// autodiff) against burn's `x · sigmoid(x)`: values and input gradients, on an odd-sized 4-D
/// tensor (a remainder after the vector lanes and the parallel chunks) and a 2-D one.
#[test]
fn silu_through_the_seam_equals_burns_values_and_gradients() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    let close = |what: &str, a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                "{what} [{i}]: {x} vs burn's {y}"
            );
        }
    };
    let x4 = Tensor::<A, 4>::random([3, 17, 19, 23], Distribution::Normal(0.0, 4.0), &device);
    let x2 = Tensor::<A, 2>::random([5, 33], Distribution::Normal(0.0, 4.0), &device);
    for (what, x) in [
        ("4-D", x4.clone()),
        ("2-D", x2.clone().reshape([5, 33, 1, 1])),
    ] {
        let r = Tensor::<A, 4>::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = if ours {
                transfer_vision::models::layers::silu(x.clone())
            } else {
                burn::tensor::activation::silu(x.clone())
            };
            let values = y.clone().to_data().to_vec::<f32>().expect("f32");
            let grads = (y * r.clone()).sum().backward();
            let dx = x.grad(&grads).expect("x grad").to_data().to_vec::<f32>();
            (values, dx.expect("f32"))
        };
        let (ours, reference) = (run(true), run(false));
        close(&format!("{what} values"), &ours.0, &reference.0);
        close(&format!("{what} gradients"), &ours.1, &reference.1);
    }
    // Inference (no autodiff) gives the same values.
    let plain = transfer_vision::models::layers::silu(x4.clone().inner());
    let reference = burn::tensor::activation::silu(x4.inner());
    close(
        "inference",
        &plain.to_data().to_vec::<f32>().expect("f32"),
        &reference.to_data().to_vec::<f32>().expect("f32"),
    );
}

/// Every activation the models fuse into a convolution, with ReLU6's bounds.
const ACTIVATIONS: [ConvActivation; 4] = [
    ConvActivation::Relu,
    ConvActivation::Hardtanh { min: 0.0, max: 6.0 },
    ConvActivation::Hardswish,
    ConvActivation::Silu,
];

/// The activation applied in the convolution's epilogue equals the convolution, then the
/// activation's own kernel, bit for bit: at every SIMD level, for dense, 1×1, depthwise and
/// stem shapes and random ones, with and without bias; and through the backend extension on
/// burn-flex and on `Autodiff<Flex>` (untracked: fused; tracked: the two recorded operations).
#[test]
fn activations_fused_into_the_convolution_equal_the_separate_passes() {
    use transfer_vision::kernels::cpu::activation;
    let mut cases: Vec<Case> = network_cases().into_iter().filter(|c| c[7] <= 56).collect();
    cases.extend(random_cases(12));
    // A 7×7 stem, whose forward pass runs on the stride-phase planes.
    cases.push([2, 3, 64, 7, 2, 3, 1, 40]);
    // Batch 1 in a pool of 2: the matrix product split over blocks of output channels, each
    // block finished as it is written (a 1×1 layer, a 3×3 one on a 7×7 map).
    cases.extend([[1, 24, 144, 1, 1, 0, 1, 14], [1, 64, 96, 3, 1, 1, 1, 7]]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    in_pool(2, || {
        for case in &cases {
            let g = geometry(case).expect("valid case");
            let (x_len, w_len, _) = g.lens();
            // Outputs spread over every kink (0, ±3, 6).
            let x: Vec<f32> = (0..x_len).map(|_| rng.random_range(-2.0..2.0)).collect();
            let w: Vec<f32> = (0..w_len).map(|_| rng.random_range(-0.5..0.5)).collect();
            let b: Vec<f32> = (0..g.c_out).map(|_| rng.random_range(-1.0..1.0)).collect();
            for level in SimdLevel::supported() {
                for bias in [None, Some(b.as_slice())] {
                    let plain = cpu::conv2d_forward(&g, &x, &w, bias, level);
                    for act in ACTIVATIONS {
                        let fused = cpu::conv2d_activated(&g, &x, &w, bias, Some(act), level);
                        let separate = match act {
                            ConvActivation::Relu => plain.iter().map(|v| v.max(0.0)).collect(),
                            ConvActivation::Hardtanh { min, max } => {
                                activation::hardtanh(&plain, min, max, level)
                            }
                            ConvActivation::Hardswish => activation::hardswish(&plain, level),
                            ConvActivation::Silu => activation::silu(&plain, level),
                        };
                        assert!(
                            fused == separate,
                            "{case:?} {level:?} bias {} {act:?}: fused differs",
                            bias.is_some()
                        );
                    }
                }
            }
        }
    });
    // Through the backend extension, on a MobileNetV2 expand and depthwise shape.
    let device = Default::default();
    for case in [
        [2, 24, 144, 1, 1, 0, 1, 14],
        [2, 144, 144, 3, 2, 1, 144, 14],
    ] {
        let (x, w, b) = random_operands::<Flex>(&case, &device);
        for act in ACTIVATIONS {
            let run = |fused: bool| {
                let (x, w, b) = (
                    x.clone().into_primitive().tensor(),
                    w.clone().into_primitive().tensor(),
                    Some(b.clone().into_primitive().tensor()),
                );
                let y = if fused {
                    Flex::conv2d_activated(x, w, b, options(&case), act)
                } else {
                    act.apply::<Flex>(Flex::conv2d_forward(x, w, b, options(&case)))
                };
                values(&Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
                    y,
                )))
            };
            let separate = run(false);
            assert!(run(true) == separate, "{case:?} {act:?}: Flex");
            type A = Autodiff<Flex>;
            for tracked in [false, true] {
                let xa = Tensor::<A, 4>::from_inner(x.clone());
                let xa = if tracked { xa.require_grad() } else { xa };
                let y = A::conv2d_activated(
                    xa.into_primitive().tensor(),
                    Tensor::<A, 4>::from_inner(w.clone())
                        .into_primitive()
                        .tensor(),
                    Some(
                        Tensor::<A, 1>::from_inner(b.clone())
                            .into_primitive()
                            .tensor(),
                    ),
                    options(&case),
                    act,
                );
                let y = Tensor::<A, 4>::from_primitive(TensorPrimitive::Float(y)).inner();
                assert!(
                    values(&y) == separate,
                    "{case:?} {act:?}: autodiff, tracked {tracked}"
                );
            }
        }
    }
}
