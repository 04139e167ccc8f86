//! The 1000 ImageNet-1k class names, for models with ImageNet's head.

use std::sync::OnceLock;

/// Number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

const CLASSES_TXT: &str = include_str!("../assets/imagenet_classes.txt");

/// The 1000 ImageNet-1k class names in torchvision's order (sorted WordNet ids: 0 = `tench`,
/// 999 = `toilet tissue`), as torchvision's `IMAGENET1K_V1` weights list them (`meta["categories"]`).
/// The list ships with the crate (`assets/imagenet_classes.txt`, made by
/// `tools/make_predict_fixtures.py`).
pub fn imagenet_classes() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| CLASSES_TXT.lines().filter(|l| !l.is_empty()).collect())
}
