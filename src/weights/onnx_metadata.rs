//! The `metadata_props` this crate writes into the ONNX files it exports and reads back on
//! import: `class_names` (a JSON array), `preprocessing` (a sentence a person can follow, in the
//! style of the shared ImageNet MobileNetV2's, that also parses back to the exact
//! [`Preprocessing`]) and `model` (the architecture's name).

use std::collections::BTreeMap;

use crate::data::{EvalResize, Normalization, Preprocessing};

/// Key of the class names, a JSON array of strings (index = class id).
pub(crate) const CLASS_NAMES: &str = "class_names";
/// Key of the preprocessing sentence.
pub(crate) const PREPROCESSING: &str = "preprocessing";
/// Key of the architecture's name (`mobilenet_v2`, `resnet18`, ...).
pub(crate) const MODEL: &str = "model";
/// The keys the exporter writes itself; a model's free metadata may not use them.
pub(crate) const RESERVED: [&str; 3] = [CLASS_NAMES, PREPROCESSING, MODEL];

/// The preprocessing as the sentence stored under [`PREPROCESSING`]: pixel scaling (with
/// `127.5` and `[-1, 1]` for TensorFlow scaling, which older readers look for), then the
/// evaluation geometry. [`parse_preprocessing`] reads it back exactly.
pub(crate) fn describe_preprocessing(p: &Preprocessing) -> String {
    let scaling = match p.normalization {
        Normalization::Tf => "p/127.5 - 1 (range [-1, 1])",
        Normalization::ImageNet => {
            "(p/255 - mean) / std with the ImageNet mean [0.485, 0.456, 0.406] and std \
             [0.229, 0.224, 0.225]"
        }
    };
    let size = p.image_size;
    let geometry = match p.resize {
        EvalResize::ShorterSide(shorter) => {
            format!("resize shorter side to {shorter} (bilinear, antialiased), center crop {size}")
        }
        EvalResize::Exact => format!("resize to {size}x{size} (bilinear, antialiased), no crop"),
    };
    let tail = match p.normalization {
        Normalization::Tf => "; no mean/std normalisation",
        Normalization::ImageNet => "",
    };
    format!("RGB, NCHW float32, pixel p in 0..255 -> {scaling}; evaluation: {geometry}{tail}")
}

/// Reads a `preprocessing` sentence: TensorFlow scaling when it mentions `127.5` or `[-1, 1]`
/// (ImageNet mean/std otherwise), the geometry from `resize shorter side to N` + `center crop
/// M` or `resize to MxM`. Text without a geometry this reader understands (or one outside
/// [`Preprocessing::check`]'s bounds) gives ImageNet's 224-pixel geometry, as files without
/// the sentence get.
pub(crate) fn parse_preprocessing(text: &str) -> Preprocessing {
    let tf = text.contains("127.5") || text.contains("[-1, 1]");
    let base = if tf {
        Preprocessing::tf(224)
    } else {
        Preprocessing::imagenet(224)
    };
    let shorter = number_after(text, "resize shorter side to ");
    let crop = number_after(text, "center crop ");
    let exact = number_after(text, "resize to ").and_then(|w| {
        let rest = text.split("resize to ").nth(1)?;
        let h = number_after(rest, &format!("{w}x"))?;
        (h == w).then_some(w)
    });
    let parsed = match (shorter, crop, exact) {
        (Some(shorter), Some(size), _) => Preprocessing {
            image_size: size,
            resize: EvalResize::ShorterSide(shorter),
            ..base
        },
        (None, None, Some(size)) => Preprocessing {
            image_size: size,
            resize: EvalResize::Exact,
            ..base
        },
        _ => base,
    };
    if parsed.check().is_ok() { parsed } else { base }
}

/// The decimal number right after the first `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<u32> {
    let start = text.find(prefix)? + prefix.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The class names stored under [`CLASS_NAMES`], when they are a JSON array of `num_classes`
/// strings.
pub(crate) fn class_names_of(
    metadata: &BTreeMap<String, String>,
    num_classes: usize,
) -> Option<Vec<String>> {
    let text = metadata.get(CLASS_NAMES)?;
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(names) if names.len() == num_classes => Some(names),
        Ok(names) => {
            log::warn!(
                "ONNX metadata `{CLASS_NAMES}` lists {} names for {num_classes} classes; ignored",
                names.len()
            );
            None
        }
        Err(e) => {
            log::warn!(
                "ONNX metadata `{CLASS_NAMES}` is not a JSON array of strings ({e}); ignored"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preprocessing_reads_back_exactly() {
        let mut cases = Vec::new();
        for size in [32, 96, 160, 224, 225, 299, 512] {
            for base in [Preprocessing::tf(size), Preprocessing::imagenet(size)] {
                cases.push(base);
                cases.push(base.with_exact_resize());
                cases.push(Preprocessing {
                    resize: EvalResize::ShorterSide(size + 77),
                    ..base
                });
            }
        }
        for p in cases {
            let text = describe_preprocessing(&p);
            assert_eq!(parse_preprocessing(&text), p, "{text}");
        }
    }

    #[test]
    fn tf_scaling_keeps_the_words_older_readers_look_for() {
        let text = describe_preprocessing(&Preprocessing::tf(224));
        assert!(text.contains("127.5") && text.contains("[-1, 1]"), "{text}");
        let text = describe_preprocessing(&Preprocessing::imagenet(224));
        assert!(
            !text.contains("127.5") && !text.contains("[-1, 1]"),
            "{text}"
        );
    }

    #[test]
    fn the_shared_weights_sentence_and_free_text() {
        let shared = "RGB, NCHW float32, pixel p in 0..255 -> p/127.5 - 1 (range [-1, 1]); \
                      evaluation: resize shorter side to 256 (bilinear), center crop 224; no \
                      mean/std normalisation";
        assert_eq!(parse_preprocessing(shared), Preprocessing::tf(224));
        assert_eq!(
            parse_preprocessing("ImageNet mean/std"),
            Preprocessing::imagenet(224)
        );
        // Sizes outside the bounds fall back to the default geometry.
        let giant = "resize shorter side to 99999, center crop 99999";
        assert_eq!(parse_preprocessing(giant), Preprocessing::imagenet(224));
    }

    #[test]
    fn class_names_must_be_a_json_array_of_the_right_length() {
        let mut m = BTreeMap::new();
        m.insert(CLASS_NAMES.to_string(), r#"["ants","bees"]"#.to_string());
        assert_eq!(
            class_names_of(&m, 2),
            Some(vec!["ants".to_string(), "bees".to_string()])
        );
        assert_eq!(class_names_of(&m, 3), None);
        m.insert(CLASS_NAMES.to_string(), "ants, bees".to_string());
        assert_eq!(class_names_of(&m, 2), None);
        assert_eq!(class_names_of(&BTreeMap::new(), 2), None);
    }
}
