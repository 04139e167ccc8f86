//! The one list of architectures, and what it generates: [`ModelSpec`] (any configuration,
//! serialisable), [`AnyModel`] (any network, chosen at run time, usable wherever a model is) and
//! the ONNX recognition that tries each architecture in turn.
//!
//! Adding an architecture is one model file (its config implementing
//! [`ArchitectureConfig`](super::ArchitectureConfig), its module implementing
//! [`ImageClassifier`](super::ImageClassifier) and [`Architecture`](super::Architecture)) plus
//! one line in the `architectures!` list of `src/models/mod.rs`, which also declares the file's
//! module.

/// Declares the model modules and generates [`ModelSpec`] and [`AnyModel`] over them.
macro_rules! architectures {
    ($( $(#[$doc:meta])* $module:ident :: $model:ident ( $config:ident ) ),+ $(,)?) => {
        $(
            pub mod $module;
            pub use $module::{$config, $model};
        )+

        /// A serialisable description of any network of the crate: its architecture and
        /// configuration, enough to rebuild it before loading its weights (saved models and
        /// checkpoints store one).
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "architecture", content = "config", rename_all = "snake_case")]
        pub enum ModelSpec {
            $( $(#[$doc])* $model($config), )+
        }

        $(
            impl From<$config> for ModelSpec {
                fn from(config: $config) -> Self {
                    ModelSpec::$model(config)
                }
            }

            impl FromSpec for $config {
                fn from_spec(spec: &ModelSpec) -> Option<Self> {
                    match spec {
                        ModelSpec::$model(config) => Some(config.clone()),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )+

        impl FromSpec for ModelSpec {
            fn from_spec(spec: &ModelSpec) -> Option<Self> {
                Some(spec.clone())
            }
        }

        impl ModelSpec {
            /// The architecture family (`mobilenet_v2`, `resnet`).
            pub fn family(&self) -> &'static str {
                match self {
                    $( ModelSpec::$model(_) => <$config as ArchitectureConfig>::FAMILY, )+
                }
            }

            /// The name of this configuration: `mobilenet_v2`, `resnet18`, `resnet34`, ...
            pub fn name(&self) -> String {
                match self {
                    $( ModelSpec::$model(c) => c.name(), )+
                }
            }

            /// Number of classes of the head.
            pub fn num_classes(&self) -> usize {
                match self {
                    $( ModelSpec::$model(c) => c.num_classes(), )+
                }
            }

            /// Checks the configuration's values before a network is built from it (see
            /// [`ArchitectureConfig::check`]).
            pub fn check(&self) -> Result<(), String> {
                match self {
                    $( ModelSpec::$model(c) => c.check(), )+
                }
            }

            /// The block fine-tuning unfreezes from by default (see
            /// [`ArchitectureConfig::fine_tune_from`]).
            pub fn fine_tune_from(&self) -> &'static str {
                match self {
                    $( ModelSpec::$model(c) => c.fine_tune_from(), )+
                }
            }

            /// The names `--model` flags accept, every architecture's presets.
            pub fn names() -> Vec<&'static str> {
                let mut names = Vec::new();
                $( names.extend(<$config as ArchitectureConfig>::presets()); )+
                names
            }

            /// What each architecture looks like in a graph ([`ArchitectureConfig::SIGNATURE`]).
            pub fn signatures() -> Vec<&'static str> {
                vec![$( <$config as ArchitectureConfig>::SIGNATURE, )+]
            }

            /// Checks that this is the architecture `wanted` names (a preset such as `resnet18`
            /// or a family such as `resnet`), else an error naming the file at `path`, the
            /// family asked for and what the file holds.
            pub fn expect(&self, wanted: &str, path: &std::path::Path) -> Result<(), WeightsError> {
                let name = self.name();
                if wanted == name || wanted == self.family() {
                    return Ok(());
                }
                let expected = ModelSpec::from_name(wanted).map_or(wanted, |s| s.family());
                Err(WeightsError::Architecture {
                    path: path.to_path_buf(),
                    expected: expected.into(),
                    found: name,
                })
            }

            /// The configuration named `name` (see [`ModelSpec::names`]), with 1000 classes.
            pub fn from_name(name: &str) -> Option<Self> {
                $(
                    if let Some(config) = <$config as ArchitectureConfig>::preset(name) {
                        return Some(config.into());
                    }
                )+
                None
            }
        }

        impl ArchitectureConfig for ModelSpec {
            const FAMILY: &'static str = "any";
            const SIGNATURE: &'static str = "an architecture of the crate";

            fn presets() -> Vec<&'static str> {
                ModelSpec::names()
            }

            fn preset(name: &str) -> Option<Self> {
                ModelSpec::from_name(name)
            }

            fn name(&self) -> String {
                ModelSpec::name(self)
            }

            fn num_classes(&self) -> usize {
                ModelSpec::num_classes(self)
            }

            fn fine_tune_from(&self) -> &'static str {
                ModelSpec::fine_tune_from(self)
            }

            fn check(&self) -> Result<(), String> {
                ModelSpec::check(self)
            }

            fn with_classes(self, num_classes: usize) -> Self {
                match self {
                    $( ModelSpec::$model(c) => c.with_classes(num_classes).into(), )+
                }
            }

            fn recognise(onnx: &OnnxBackbone<'_>) -> Option<Result<Self, WeightsError>> {
                $(
                    if let Some(found) = <$config as ArchitectureConfig>::recognise(onnx) {
                        return Some(found.map(Into::into));
                    }
                )+
                None
            }
        }

        /// Any network of the crate, its architecture chosen at run time (from an ONNX file, a
        /// saved model or a `--model` name). It is a burn module and an [`Architecture`] like
        /// the concrete models, so it trains, saves and loads the same way; its parameter paths
        /// and saved weights are those of the network inside.
        #[derive(Debug, Clone)]
        pub enum AnyModel<B: $crate::kernels::ConvBackend> {
            $( $(#[$doc])* $model(Box<$model<B>>), )+
        }

        $(
            impl<B: $crate::kernels::ConvBackend> From<$model<B>> for AnyModel<B> {
                fn from(model: $model<B>) -> Self {
                    AnyModel::$model(Box::new(model))
                }
            }
        )+

        /// The record of an [`AnyModel`]: the active network's, under its module's name.
        /// (Saved files hold the network's own record: see [`Architecture::to_record_bytes`].)
        #[derive(burn::record::Record)]
        pub struct AnyModelRecord<B: $crate::kernels::ConvBackend> {
            $(
                #[doc = concat!("The record when the network is a `", stringify!($model), "`.")]
                pub $module: Option<<$model<B> as Module<B>>::Record>,
            )+
        }

        impl<B: $crate::kernels::ConvBackend> Module<B> for AnyModel<B> {
            type Record = AnyModelRecord<B>;

            fn collect_devices(&self, devices: burn::module::Devices<B>) -> burn::module::Devices<B> {
                match self {
                    $( AnyModel::$model(m) => Module::<B>::collect_devices(m.as_ref(), devices), )+
                }
            }

            fn fork(self, device: &B::Device) -> Self {
                match self {
                    $( AnyModel::$model(m) => AnyModel::$model(Box::new(Module::<B>::fork(*m, device))), )+
                }
            }

            fn to_device(self, device: &B::Device) -> Self {
                match self {
                    $( AnyModel::$model(m) => AnyModel::$model(Box::new(Module::<B>::to_device(*m, device))), )+
                }
            }

            fn num_params(&self) -> usize {
                match self {
                    $( AnyModel::$model(m) => Module::<B>::num_params(m.as_ref()), )+
                }
            }

            fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
                match self {
                    $( AnyModel::$model(m) => Module::<B>::visit(m.as_ref(), visitor), )+
                }
            }

            fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
                match self {
                    $( AnyModel::$model(m) => AnyModel::$model(Box::new(Module::<B>::map(*m, mapper))), )+
                }
            }

            fn load_record(self, record: Self::Record) -> Self {
                // A record of another architecture cannot describe this network: keep it.
                match self {
                    $(
                        AnyModel::$model(m) => match record.$module {
                            Some(r) => AnyModel::$model(Box::new(Module::<B>::load_record(*m, r))),
                            None => AnyModel::$model(m),
                        },
                    )+
                }
            }

            fn into_record(self) -> Self::Record {
                #[allow(unused_mut)]
                let mut record = AnyModelRecord { $( $module: None, )+ };
                match self {
                    $( AnyModel::$model(m) => record.$module = Some(Module::<B>::into_record(*m)), )+
                }
                record
            }
        }

        impl<B: $crate::kernels::AutodiffConvBackend> AutodiffModule<B> for AnyModel<B> {
            type InnerModule = AnyModel<B::InnerBackend>;

            fn valid(&self) -> Self::InnerModule {
                match self {
                    $( AnyModel::$model(m) => AnyModel::$model(Box::new(AutodiffModule::<B>::valid(m.as_ref()))), )+
                }
            }

            fn from_inner(module: Self::InnerModule) -> Self {
                match module {
                    $( AnyModel::$model(m) => AnyModel::$model(Box::new($model::from_inner(*m))), )+
                }
            }
        }

        impl<B: $crate::kernels::AutodiffConvBackend> HasAutodiffModule<B> for AnyModel<B::InnerBackend> {
            type TrainModule = AnyModel<B>;
        }

        impl<B: $crate::kernels::ConvBackend> ModuleDisplayDefault for AnyModel<B> {
            fn content(&self, content: Content) -> Option<Content> {
                match self {
                    $( AnyModel::$model(m) => m.content(content), )+
                }
            }
        }

        impl<B: $crate::kernels::ConvBackend> ModuleDisplay for AnyModel<B> {}

        impl<B: $crate::kernels::ConvBackend> ImageClassifier<B> for AnyModel<B> {
            fn forward_blocks(&self, x: Tensor<B, 4>, blocks: Range<usize>) -> Tensor<B, 4> {
                match self {
                    $( AnyModel::$model(m) => m.forward_blocks(x, blocks), )+
                }
            }

            fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
                match self {
                    $( AnyModel::$model(m) => m.classify(features), )+
                }
            }

            fn pool(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
                match self {
                    $( AnyModel::$model(m) => m.pool(x), )+
                }
            }

            fn with_dropout(self, prob: f64) -> Self {
                match self {
                    $( AnyModel::$model(m) => AnyModel::$model(Box::new(m.with_dropout(prob))), )+
                }
            }

            fn head(&self) -> &Linear<B> {
                match self {
                    $( AnyModel::$model(m) => m.head(), )+
                }
            }

            fn head_mut(&mut self) -> &mut Linear<B> {
                match self {
                    $( AnyModel::$model(m) => m.head_mut(), )+
                }
            }

            fn head_path(&self) -> &'static str {
                match self {
                    $( AnyModel::$model(m) => m.head_path(), )+
                }
            }

            fn block_paths(&self) -> Vec<String> {
                match self {
                    $( AnyModel::$model(m) => m.block_paths(), )+
                }
            }

            fn conv_bn_pairs_mut(&mut self) -> Vec<ConvBnMut<'_, B>> {
                match self {
                    $( AnyModel::$model(m) => m.conv_bn_pairs_mut(), )+
                }
            }

            fn convs_mut(&mut self) -> Vec<ConvMut<'_, B>> {
                match self {
                    $( AnyModel::$model(m) => m.convs_mut(), )+
                }
            }

            fn hidden_linears(&self) -> Vec<HiddenLinear<'_, B>> {
                match self {
                    $( AnyModel::$model(m) => m.hidden_linears(), )+
                }
            }
        }

        impl<B: $crate::kernels::ConvBackend> Architecture<B> for AnyModel<B> {
            type Config = ModelSpec;

            fn config(&self) -> ModelSpec {
                match self {
                    $( AnyModel::$model(m) => m.config().into(), )+
                }
            }

            fn from_config(config: &ModelSpec, device: &B::Device) -> Self {
                match config {
                    $( ModelSpec::$model(c) => $model::from_config(c, device).into(), )+
                }
            }

            fn to_record_bytes(&self) -> Result<Vec<u8>, RecorderError> {
                match self {
                    $( AnyModel::$model(m) => m.to_record_bytes(), )+
                }
            }

            fn load_record_bytes(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self, RecorderError> {
                Ok(match self {
                    $( AnyModel::$model(m) => m.load_record_bytes(bytes, device)?.into(), )+
                })
            }
        }
    };
}

pub(crate) use architectures;
