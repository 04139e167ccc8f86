//! Architecture tests: parameter counts, state-dict keys and shapes against torchvision
//! (`../shared/fixtures/architectures`), output shapes and TensorFlow "SAME" geometry.

mod common;

use burn::tensor::Tensor;
use transfer_vision::backend::Cpu;
use transfer_vision::models::layers::Padding;
use transfer_vision::models::{
    Architecture, EfficientNetConfig, ImageClassifier, MobileNetV2Config, MobileNetV3Config,
    ResNetConfig, param_count, state_dict,
};

fn device() -> burn::tensor::Device<Cpu> {
    Default::default()
}

#[test]
fn mobilenet_v2_parameter_counts_equal_torchvision() {
    let d = device();
    let count = |cfg: MobileNetV2Config| param_count(&cfg.init::<Cpu>(&d)).total;
    assert_eq!(count(MobileNetV2Config::new()), 3_504_872);
    assert_eq!(
        count(MobileNetV2Config::new().with_width_mult(0.5)),
        1_968_680
    );
    assert_eq!(
        count(MobileNetV2Config::new().with_width_mult(1.4)),
        6_108_776
    );
    assert_eq!(
        count(MobileNetV2Config::new().with_num_classes(2)),
        2_226_434
    );
}

#[test]
fn resnet_parameter_counts_equal_torchvision() {
    let d = device();
    assert_eq!(
        param_count(&ResNetConfig::resnet18(1000).init::<Cpu>(&d)).total,
        11_689_512
    );
    assert_eq!(
        param_count(&ResNetConfig::resnet34(1000).init::<Cpu>(&d)).total,
        21_797_672
    );
    assert_eq!(
        param_count(&ResNetConfig::resnet18(2).init::<Cpu>(&d)).total,
        11_177_538
    );
}

#[test]
fn mobilenet_v3_and_efficientnet_parameter_counts_equal_torchvision() {
    let d = device();
    let v3 = |cfg: MobileNetV3Config| param_count(&cfg.init::<Cpu>(&d)).total;
    assert_eq!(v3(MobileNetV3Config::small(1000)), 2_542_856);
    assert_eq!(v3(MobileNetV3Config::small(2)), 1_519_906);
    assert_eq!(v3(MobileNetV3Config::large(1000)), 5_483_032);
    assert_eq!(v3(MobileNetV3Config::large(2)), 4_204_594);
    let efficientnet = |cfg: EfficientNetConfig| param_count(&cfg.init::<Cpu>(&d)).total;
    assert_eq!(efficientnet(EfficientNetConfig::b0(1000)), 5_288_548);
    assert_eq!(efficientnet(EfficientNetConfig::b0(2)), 4_010_110);
}

/// `(key, shape)` rows of a state dict.
type Keys = Vec<(String, Vec<usize>)>;

/// Reads `key<TAB>[d0, d1, ...]` rows.
fn read_tsv(name: &str) -> Option<Keys> {
    let path = common::shared(&format!("fixtures/architectures/{name}.state_dict.tsv"))?;
    let text = std::fs::read_to_string(&path).expect("read tsv");
    Some(
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (key, shape) = line.split_once('\t').expect("two columns");
                let dims = shape
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse().expect("dim"))
                    .collect();
                (key.to_string(), dims)
            })
            .collect(),
    )
}

fn ours<M: burn::module::Module<Cpu>>(model: &M) -> Keys {
    state_dict::<Cpu, M>(model)
        .into_iter()
        .map(|e| (e.key, e.shape))
        .collect()
}

#[test]
fn state_dict_keys_and_shapes_equal_torchvision_files() {
    let d = device();
    let cases: Vec<(&str, Keys)> = vec![
        (
            "mobilenet_v2",
            ours(&MobileNetV2Config::new().init::<Cpu>(&d)),
        ),
        (
            "mobilenet_v2_2classes",
            ours(&MobileNetV2Config::new().with_num_classes(2).init::<Cpu>(&d)),
        ),
        (
            "mobilenet_v2_w050",
            ours(
                &MobileNetV2Config::new()
                    .with_width_mult(0.5)
                    .init::<Cpu>(&d),
            ),
        ),
        (
            "mobilenet_v2_w140",
            ours(
                &MobileNetV2Config::new()
                    .with_width_mult(1.4)
                    .init::<Cpu>(&d),
            ),
        ),
        (
            "resnet18",
            ours(&ResNetConfig::resnet18(1000).init::<Cpu>(&d)),
        ),
        (
            "resnet18_2classes",
            ours(&ResNetConfig::resnet18(2).init::<Cpu>(&d)),
        ),
        (
            "resnet34",
            ours(&ResNetConfig::resnet34(1000).init::<Cpu>(&d)),
        ),
        (
            "mobilenet_v3_small",
            ours(&MobileNetV3Config::small(1000).init::<Cpu>(&d)),
        ),
        (
            "mobilenet_v3_small_2classes",
            ours(&MobileNetV3Config::small(2).init::<Cpu>(&d)),
        ),
        (
            "mobilenet_v3_large",
            ours(&MobileNetV3Config::large(1000).init::<Cpu>(&d)),
        ),
        (
            "mobilenet_v3_large_2classes",
            ours(&MobileNetV3Config::large(2).init::<Cpu>(&d)),
        ),
        (
            "efficientnet_b0",
            ours(&EfficientNetConfig::b0(1000).init::<Cpu>(&d)),
        ),
        (
            "efficientnet_b0_2classes",
            ours(&EfficientNetConfig::b0(2).init::<Cpu>(&d)),
        ),
    ];
    for (name, mine) in cases {
        let Some(expected) = read_tsv(name) else {
            continue;
        };
        // Same keys in the same order (torchvision's registration order), same shapes.
        assert_eq!(mine.len(), expected.len(), "{name}: tensor count");
        for (a, b) in mine.iter().zip(&expected) {
            assert_eq!(a, b, "{name}");
        }
    }
}

#[test]
fn output_and_feature_shapes_at_160_and_224() {
    let d = device();
    let mobilenet = MobileNetV2Config::new().init::<Cpu>(&d);
    let resnet = ResNetConfig::resnet18(1000).init::<Cpu>(&d);
    for size in [160, 224] {
        let x = Tensor::<Cpu, 4>::zeros([2, 3, size, size], &d);
        assert_eq!(mobilenet.forward(x.clone()).dims(), [2, 1000]);
        assert_eq!(mobilenet.features(x.clone()).dims(), [2, 1280]);
        assert_eq!(resnet.forward(x.clone()).dims(), [2, 1000]);
        assert_eq!(resnet.features(x).dims(), [2, 512]);
    }
    // Any size from 32 up works.
    let x = Tensor::<Cpu, 4>::zeros([1, 3, 33, 47], &d);
    assert_eq!(mobilenet.forward(x.clone()).dims(), [1, 1000]);
    assert_eq!(resnet.forward(x).dims(), [1, 1000]);
}

#[test]
fn tf_same_padding_gives_tensorflow_spatial_sizes() {
    let d = device();
    let model = MobileNetV2Config::new()
        .with_padding(Padding::TfSame)
        .init::<Cpu>(&d);
    for (size, expected) in [(224, [112, 56, 28, 14, 7]), (160, [80, 40, 20, 10, 5])] {
        let summary = model.summary([3, size, size]);
        let mut sizes: Vec<usize> = summary
            .rows
            .iter()
            .filter(|r| r.kind == "Conv2d")
            .map(|r| r.output_shape[1])
            .collect();
        sizes.dedup();
        assert_eq!(sizes, expected, "summary sizes at {size}");
        // And the real forward pass agrees with the summary's geometry.
        let x = Tensor::<Cpu, 4>::zeros([1, 3, size, size], &d);
        let stem = match &model.features[0] {
            transfer_vision::models::mobilenet_v2::Feature::Stem(l) => l.conv.forward(x),
            _ => unreachable!(),
        };
        assert_eq!(stem.dims(), [1, 32, expected[0], expected[0]]);
        assert_eq!(
            model.features(Tensor::zeros([1, 3, size, size], &d)).dims(),
            [1, 1280]
        );
    }
    // Stride-2 3×3 pads 0 top/left and 1 bottom/right on even inputs.
    assert_eq!(Padding::TfSame.amounts(3, 2, 224, 224), [0, 0, 1, 1]);
    assert_eq!(Padding::TfSame.amounts(3, 1, 112, 112), [1, 1, 1, 1]);
    assert_eq!(Padding::TfSame.amounts(1, 1, 7, 7), [0, 0, 0, 0]);
}

#[test]
fn summary_lists_layers_and_totals() {
    let d = device();
    let model = MobileNetV2Config::new().with_num_classes(2).init::<Cpu>(&d);
    let summary = model.summary([3, 160, 160]);
    let text = summary.to_string();
    assert!(text.contains("Total params: 2,226,434"), "{text}");
    assert!(text.contains("features.18.0"), "{text}");
    assert_eq!(summary.output_shape(), vec![2]);
    assert_eq!(
        summary.rows.iter().filter(|r| r.kind == "Conv2d").count(),
        52
    );
    let row_params: usize = summary.rows.iter().map(|r| r.params).sum();
    assert_eq!(row_params, summary.params.total);

    let resnet = ResNetConfig::resnet34(1000).init::<Cpu>(&d);
    let summary = resnet.summary([3, 224, 224]);
    assert_eq!(
        summary.rows.iter().map(|r| r.params).sum::<usize>(),
        21_797_672
    );
    let last_conv = summary
        .rows
        .iter()
        .rev()
        .find(|r| r.kind == "Conv2d")
        .unwrap();
    assert_eq!(last_conv.output_shape, vec![512, 7, 7]);
}

#[test]
fn new_head_replaces_only_the_classifier() {
    let d = device();
    let model = ResNetConfig::resnet18(1000)
        .init::<Cpu>(&d)
        .with_new_head(5, &d);
    assert_eq!(model.num_classes(), 5);
    assert_eq!(model.feature_dim(), 512);
    assert_eq!(model.config(), ResNetConfig::resnet18(5));
    let model = MobileNetV2Config::new()
        .init::<Cpu>(&d)
        .with_new_head(3, &d);
    assert_eq!(model.config().num_classes, 3);
}

#[test]
fn the_configuration_read_back_builds_the_same_network_at_any_width() {
    let d = device();
    for width in [0.35, 0.6, 0.8, 1.0, 1.2, 1.4] {
        let config = MobileNetV2Config::new().with_width_mult(width);
        let read_back = config.init::<Cpu>(&d).config();
        assert_eq!(
            read_back.conv_out_channels(),
            config.conv_out_channels(),
            "width {width} read back as {}",
            read_back.width_mult
        );
    }
}

#[test]
fn mobilenet_v3_and_efficientnet_shapes_heads_and_summaries() {
    let d = device();
    // (config, pooled features, blocks, last block's output channels and size at 224)
    let small = MobileNetV3Config::small(1000).init::<Cpu>(&d);
    let large = MobileNetV3Config::large(1000).init::<Cpu>(&d);
    let b0 = EfficientNetConfig::b0(1000).init::<Cpu>(&d);
    assert_eq!((small.feature_dim(), small.block_paths().len()), (576, 13));
    assert_eq!((large.feature_dim(), large.block_paths().len()), (960, 17));
    assert_eq!((b0.feature_dim(), b0.block_paths().len()), (1280, 18));
    assert_eq!(b0.block_paths()[2], "features.2.0");
    assert_eq!(
        small.classifier_paths(),
        vec!["classifier.0", "classifier.3"]
    );
    assert_eq!(b0.classifier_paths(), vec!["classifier.1"]);
    for size in [160, 224] {
        let x = Tensor::<Cpu, 4>::zeros([1, 3, size, size], &d);
        assert_eq!(small.forward(x.clone()).dims(), [1, 1000]);
        assert_eq!(large.forward(x.clone()).dims(), [1, 1000]);
        assert_eq!(b0.forward(x).dims(), [1, 1000]);
    }

    // A new head keeps MobileNetV3's hidden layer (classifier.0: 576 -> 1024).
    let small = small.with_new_head(2, &d);
    assert_eq!(small.head().in_features(), 1024);
    assert_eq!(small.config(), MobileNetV3Config::small(2));
    assert_eq!(param_count(&small).total, 1_519_906);
    let b0 = b0.with_new_head(2, &d);
    assert_eq!(b0.config(), EfficientNetConfig::b0(2));

    // Summaries: every layer with parameters once, totals equal torchvision's.
    let summary = small.summary([3, 224, 224]);
    assert_eq!(summary.params.total, 1_519_906);
    assert_eq!(
        summary.rows.iter().map(|r| r.params).sum::<usize>(),
        1_519_906
    );
    assert_eq!(
        summary.rows.iter().filter(|r| r.kind == "Conv2d").count(),
        52
    );
    let last_conv = summary
        .rows
        .iter()
        .rev()
        .find(|r| r.kind == "Conv2d")
        .unwrap();
    assert_eq!(last_conv.output_shape, vec![576, 7, 7]);
    let summary = b0.summary([3, 224, 224]);
    assert_eq!(
        summary.rows.iter().map(|r| r.params).sum::<usize>(),
        4_010_110
    );
    assert_eq!(
        summary.rows.iter().filter(|r| r.kind == "Conv2d").count(),
        81
    );
}

#[test]
fn mobilenet_v3_configuration_read_back_at_any_width() {
    let d = device();
    for config in [MobileNetV3Config::small(10), MobileNetV3Config::large(3)] {
        for width in [0.5, 0.75, 1.0, 1.25] {
            let config = config.clone().with_width_mult(width);
            let read_back = config.init::<Cpu>(&d).config();
            assert_eq!(read_back.variant, config.variant);
            assert_eq!(
                read_back.conv_out_channels(),
                config.conv_out_channels(),
                "{:?} width {width} read back as {}",
                config.variant,
                read_back.width_mult
            );
        }
    }
}
