//! Modules whose parameter paths follow torchvision's numbering rather than Rust field names.
//!
//! torchvision builds its networks from `nn.Sequential`s, whose children are numbered
//! (`features.3.conv.1.0.weight`). burn's `#[derive(Module)]` names a path level after each
//! field (or, on an enum, after the variant), so two macros give readable Rust with torchvision's
//! paths:
//! - `numbered_module!`: a struct with named fields, each entering the path under its number
//!   (`conv` at `.0`, `bn` at `.1`); its record is the tuple of the fields' records, what a
//!   tuple module `(A, B)` would have.
//! - `transparent_module_enum!`: an enum standing for one position of a `Sequential` that holds
//!   layers of different types, entering no path level of its own.

/// Declares `pub struct $name<B: ConvBackend> { $field: $ty, ... }` whose fields appear in parameter
/// paths under the numbers given (`conv(0): Conv2d<B>`), with `Module`, `AutodiffModule` and
/// display impls. Fields are listed in path order.
macro_rules! numbered_module {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident ( $index:tt ) : $ty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name<B: $crate::kernels::ConvBackend> {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }

        impl<B: $crate::kernels::ConvBackend> burn::module::Module<B> for $name<B> {
            type Record = ($( <$ty as burn::module::Module<B>>::Record, )+);

            fn collect_devices(&self, devices: burn::module::Devices<B>) -> burn::module::Devices<B> {
                $( let devices = burn::module::Module::<B>::collect_devices(&self.$field, devices); )+
                devices
            }

            fn fork(self, device: &B::Device) -> Self {
                Self { $( $field: burn::module::Module::<B>::fork(self.$field, device), )+ }
            }

            fn to_device(self, device: &B::Device) -> Self {
                Self { $( $field: burn::module::Module::<B>::to_device(self.$field, device), )+ }
            }

            fn num_params(&self) -> usize {
                0 $( + burn::module::Module::<B>::num_params(&self.$field) )+
            }

            fn visit<V: burn::module::ModuleVisitor<B>>(&self, visitor: &mut V) {
                $(
                    visitor.enter_module(stringify!($index), stringify!($name));
                    burn::module::Module::<B>::visit(&self.$field, visitor);
                    visitor.exit_module(stringify!($index), stringify!($name));
                )+
            }

            fn map<M: burn::module::ModuleMapper<B>>(self, mapper: &mut M) -> Self {
                Self { $( $field: {
                    mapper.enter_module(stringify!($index), stringify!($name));
                    let mapped = burn::module::Module::<B>::map(self.$field, mapper);
                    mapper.exit_module(stringify!($index), stringify!($name));
                    mapped
                }, )+ }
            }

            fn load_record(self, record: Self::Record) -> Self {
                Self { $( $field: burn::module::Module::<B>::load_record(self.$field, record.$index), )+ }
            }

            fn into_record(self) -> Self::Record {
                ($( burn::module::Module::<B>::into_record(self.$field), )+)
            }
        }

        impl<B: $crate::kernels::AutodiffConvBackend> burn::module::AutodiffModule<B> for $name<B> {
            type InnerModule = $name<B::InnerBackend>;

            fn valid(&self) -> Self::InnerModule {
                $name { $( $field: burn::module::AutodiffModule::<B>::valid(&self.$field), )+ }
            }

            fn from_inner(module: Self::InnerModule) -> Self {
                Self { $( $field: <$ty as burn::module::AutodiffModule<B>>::from_inner(module.$field), )+ }
            }
        }

        impl<B: $crate::kernels::AutodiffConvBackend> burn::module::HasAutodiffModule<B>
            for $name<B::InnerBackend>
        {
            type TrainModule = $name<B>;
        }

        impl<B: $crate::kernels::ConvBackend> burn::module::ModuleDisplayDefault for $name<B> {
            fn content(&self, content: burn::module::Content) -> Option<burn::module::Content> {
                content
                    $( .add(stringify!($index), &self.$field) )+
                    .set_top_level_type(stringify!($name))
                    .optional()
            }
        }

        impl<B: $crate::kernels::ConvBackend> burn::module::ModuleDisplay for $name<B> {}
    };
}

pub(crate) use numbered_module;

/// Declares `pub enum $name<B: ConvBackend> { $va($ta<B>), $vb($tb<B>) }` with `Module`,
/// `AutodiffModule` and display impls that delegate to the active variant.
macro_rules! transparent_module_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[$ma:meta])* $va:ident($ta:ident),
            $(#[$mb:meta])* $vb:ident($tb:ident) $(,)?
        }
    ) => {
        $(#[$meta])*
        // A model holds a few dozen of these, built once: variant sizes do not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone)]
        pub enum $name<B: $crate::kernels::ConvBackend> {
            $(#[$ma])* $va($ta<B>),
            $(#[$mb])* $vb($tb<B>),
        }

        impl<B: $crate::kernels::ConvBackend> burn::module::Module<B> for $name<B> {
            type Record = (
                Option<<$ta<B> as burn::module::Module<B>>::Record>,
                Option<<$tb<B> as burn::module::Module<B>>::Record>,
            );

            fn collect_devices(&self, devices: burn::module::Devices<B>) -> burn::module::Devices<B> {
                match self {
                    Self::$va(m) => m.collect_devices(devices),
                    Self::$vb(m) => m.collect_devices(devices),
                }
            }

            fn fork(self, device: &B::Device) -> Self {
                match self {
                    Self::$va(m) => Self::$va(m.fork(device)),
                    Self::$vb(m) => Self::$vb(m.fork(device)),
                }
            }

            fn to_device(self, device: &B::Device) -> Self {
                match self {
                    Self::$va(m) => Self::$va(m.to_device(device)),
                    Self::$vb(m) => Self::$vb(m.to_device(device)),
                }
            }

            fn num_params(&self) -> usize {
                match self {
                    Self::$va(m) => m.num_params(),
                    Self::$vb(m) => m.num_params(),
                }
            }

            fn visit<V: burn::module::ModuleVisitor<B>>(&self, visitor: &mut V) {
                match self {
                    Self::$va(m) => m.visit(visitor),
                    Self::$vb(m) => m.visit(visitor),
                }
            }

            fn map<M: burn::module::ModuleMapper<B>>(self, mapper: &mut M) -> Self {
                match self {
                    Self::$va(m) => Self::$va(m.map(mapper)),
                    Self::$vb(m) => Self::$vb(m.map(mapper)),
                }
            }

            fn load_record(self, record: Self::Record) -> Self {
                // A record of the other variant cannot describe this layer: keep it unchanged.
                // Saved models are rebuilt from their stored config first, so variants match.
                match (self, record) {
                    (Self::$va(m), (Some(r), _)) => Self::$va(m.load_record(r)),
                    (Self::$vb(m), (_, Some(r))) => Self::$vb(m.load_record(r)),
                    (module, _) => module,
                }
            }

            fn into_record(self) -> Self::Record {
                match self {
                    Self::$va(m) => (Some(m.into_record()), None),
                    Self::$vb(m) => (None, Some(m.into_record())),
                }
            }
        }

        impl<B: $crate::kernels::AutodiffConvBackend> burn::module::AutodiffModule<B> for $name<B> {
            type InnerModule = $name<B::InnerBackend>;

            fn valid(&self) -> Self::InnerModule {
                match self {
                    Self::$va(m) => $name::$va(burn::module::AutodiffModule::<B>::valid(m)),
                    Self::$vb(m) => $name::$vb(burn::module::AutodiffModule::<B>::valid(m)),
                }
            }

            fn from_inner(module: Self::InnerModule) -> Self {
                match module {
                    $name::$va(m) => {
                        Self::$va(<$ta<B> as burn::module::AutodiffModule<B>>::from_inner(m))
                    }
                    $name::$vb(m) => {
                        Self::$vb(<$tb<B> as burn::module::AutodiffModule<B>>::from_inner(m))
                    }
                }
            }
        }

        impl<B: $crate::kernels::AutodiffConvBackend> burn::module::HasAutodiffModule<B>
            for $name<B::InnerBackend>
        {
            type TrainModule = $name<B>;
        }

        impl<B: $crate::kernels::ConvBackend> burn::module::ModuleDisplayDefault for $name<B> {
            fn content(&self, content: burn::module::Content) -> Option<burn::module::Content> {
                match self {
                    Self::$va(m) => m.content(content),
                    Self::$vb(m) => m.content(content),
                }
            }
        }

        impl<B: $crate::kernels::ConvBackend> burn::module::ModuleDisplay for $name<B> {}
    };
}

pub(crate) use transparent_module_enum;
