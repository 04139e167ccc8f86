//! ImageFolder: layouts, counts on the shared datasets (skipped outside CI when missing), and
//! bad input made in a temp dir.

mod common;

use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use transfer_vision::data::{
    DataError, DecodeOptions, FolderOptions, ImageFolder, TrainVal, WarningKind, decode_rgb,
};

fn write_image(path: &Path, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let img = RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
    img.save_with_format(path, format).expect("write image");
}

fn jpeg_bytes() -> Vec<u8> {
    let img = RgbImage::from_fn(64, 48, |x, y| {
        Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Jpeg).expect("encode");
    buf.into_inner()
}

fn png_bytes() -> Vec<u8> {
    let img = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 7]));
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Png).expect("encode");
    buf.into_inner()
}

/// A two-class folder: `cats/` (2 images) and `not cats/` (1 image, apostrophe in its name).
fn good_folder(root: &Path) {
    write_image(&root.join("cats/a.jpg"), ImageFormat::Jpeg);
    write_image(&root.join("cats/B.PNG"), ImageFormat::Png);
    write_image(&root.join("not cats/it's a dog.jpeg"), ImageFormat::Jpeg);
}

#[test]
fn classes_sorted_names_with_spaces_and_apostrophes() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_folder(dir.path());
    let f = ImageFolder::new(dir.path()).expect("scan");
    assert_eq!(f.classes(), ["cats", "not cats"]);
    assert_eq!(
        f.class_counts(),
        vec![("cats".to_string(), 2), ("not cats".to_string(), 1)]
    );
    assert_eq!(f.samples()[2].label, 1);
    assert!(f.warnings().is_empty());
    for s in f.samples() {
        let img = decode_rgb(&s.path, &DecodeOptions::default()).expect("decode");
        assert_eq!(img.dimensions(), (40, 30));
    }
    assert!(f.summary().contains("3 images"));
}

#[test]
fn hidden_and_non_image_files_are_skipped_with_one_warning_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_folder(dir.path());
    std::fs::write(dir.path().join("cats/.DS_Store"), b"junk").expect("write");
    std::fs::write(dir.path().join("cats/._a.jpg"), b"junk").expect("write");
    std::fs::write(dir.path().join("cats/notes.txt"), b"hello").expect("write");
    write_image(&dir.path().join("cats/anim.gif"), ImageFormat::Gif);
    std::fs::write(dir.path().join("README"), b"loose file").expect("write");
    let f = ImageFolder::new(dir.path()).expect("scan");
    assert_eq!(f.len(), 3);
    let w = f.warnings();
    assert_eq!(w.len(), 5, "{w:?}");
    let find = |name: &str| {
        w.iter()
            .find(|w| w.path.ends_with(name))
            .unwrap_or_else(|| panic!("no warning for {name}: {w:?}"))
    };
    assert_eq!(find(".DS_Store").kind, WarningKind::Hidden);
    assert_eq!(find("._a.jpg").kind, WarningKind::Hidden);
    assert_eq!(find("notes.txt").kind, WarningKind::NotAnImage);
    assert_eq!(find("anim.gif").kind, WarningKind::NotAnImage);
    assert_eq!(find("README").kind, WarningKind::NotAClassFolder);
    assert!(find("notes.txt").to_string().contains("notes.txt"));
    // GIFs are accepted on request.
    let f = ImageFolder::with_options(dir.path(), FolderOptions::default().with_extension("gif"))
        .expect("scan");
    assert_eq!(f.len(), 4);
}

#[test]
fn jpg_that_is_really_a_png_decodes_by_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("really_png.jpg");
    std::fs::write(&p, png_bytes()).expect("write");
    let img = decode_rgb(&p, &DecodeOptions::default()).expect("a PNG named .jpg decodes");
    assert_eq!(img.dimensions(), (64, 48));
}

fn decode_err(bytes: &[u8], name: &str) -> DataError {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    let e = decode_rgb(&p, &DecodeOptions::default()).expect_err("must fail");
    assert_eq!(e.path(), p);
    assert!(
        e.to_string().contains(name),
        "message must name the file: {e}"
    );
    e
}

#[test]
fn undecodable_file_is_an_error_naming_the_path() {
    let e = decode_err(b"this is not an image at all, just some text", "fake.jpg");
    assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
}

#[test]
fn zero_length_file_is_an_error_naming_the_path() {
    let e = decode_err(b"", "empty.jpg");
    assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
}

#[test]
fn truncated_images_are_errors_naming_the_path() {
    let png = png_bytes();
    let e = decode_err(&png[..png.len() / 2], "truncated.png");
    assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
    let jpg = jpeg_bytes();
    let e = decode_err(&jpg[..jpg.len() / 3], "truncated.jpg");
    assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
}

#[test]
fn huge_dimension_header_is_refused_by_the_pixel_limit() {
    // A PPM header announcing 100000 x 100000 pixels (10 gigapixels) and no pixel data.
    let e = decode_err(b"P6\n100000 100000\n255\n\x00\x00\x00", "bomb.ppm");
    assert!(
        matches!(
            e,
            DataError::TooLarge {
                pixels: 10_000_000_000,
                ..
            }
        ),
        "{e:?}"
    );
    // The limit is configurable: a 40x30 image is refused under a 1000-pixel limit.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("small.png");
    write_image(&p, ImageFormat::Png);
    let e = decode_rgb(&p, &DecodeOptions { max_pixels: 1000 }).expect_err("over the limit");
    assert!(
        matches!(
            e,
            DataError::TooLarge {
                width: 40,
                height: 30,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn greyscale_palette_rgba_and_16_bit_become_8_bit_rgb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grey = image::GrayImage::from_fn(8, 4, |x, _| image::Luma([(x * 30) as u8]));
    grey.save(dir.path().join("g.png")).expect("write");
    let rgba = image::RgbaImage::from_pixel(8, 4, image::Rgba([10, 20, 30, 0]));
    rgba.save(dir.path().join("a.png")).expect("write");
    let deep = image::ImageBuffer::<Rgb<u16>, Vec<u16>>::from_pixel(8, 4, Rgb([65535, 0, 32896]));
    deep.save(dir.path().join("d.png")).expect("write");
    write_image(&dir.path().join("p.gif"), ImageFormat::Gif);
    let o = DecodeOptions::default();
    let g = decode_rgb(&dir.path().join("g.png"), &o).expect("grey");
    assert_eq!(g.get_pixel(2, 0).0, [60, 60, 60]);
    let a = decode_rgb(&dir.path().join("a.png"), &o).expect("rgba");
    assert_eq!(a.get_pixel(0, 0).0, [10, 20, 30]);
    let d = decode_rgb(&dir.path().join("d.png"), &o).expect("16-bit");
    assert_eq!(d.get_pixel(0, 0).0, [255, 0, 128]);
    let p = decode_rgb(&dir.path().join("p.gif"), &o).expect("gif");
    assert_eq!(p.dimensions(), (40, 30));
}

#[test]
fn empty_class_folder_is_an_error_naming_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_folder(dir.path());
    std::fs::create_dir_all(dir.path().join("empty class")).expect("mkdir");
    std::fs::write(dir.path().join("empty class/notes.txt"), b"x").expect("write");
    let e = ImageFolder::new(dir.path()).expect_err("empty class");
    assert!(matches!(e, DataError::EmptyClass { .. }), "{e:?}");
    assert!(e.path().ends_with("empty class"));
    assert!(e.to_string().contains("empty class"));
}

#[test]
fn empty_or_missing_root_is_an_error_naming_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("loose.jpg"), jpeg_bytes()).expect("write");
    let e = ImageFolder::new(dir.path()).expect_err("no classes");
    assert!(matches!(e, DataError::EmptyRoot { .. }), "{e:?}");
    assert_eq!(e.path(), dir.path());
    let missing = dir.path().join("nope");
    let e = ImageFolder::new(&missing).expect_err("missing root");
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nope"));
}

#[test]
fn lenient_verify_drops_undecodable_files_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_folder(dir.path());
    std::fs::write(dir.path().join("cats/broken.jpg"), b"garbage").expect("write");
    let mut strict = ImageFolder::new(dir.path()).expect("scan");
    assert_eq!(strict.len(), 4);
    let e = strict.verify(2).expect_err("strict");
    let DataError::Damaged { files, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(files.len(), 1);
    assert!(files[0].0.ends_with("broken.jpg"));
    assert!(e.to_string().contains("broken.jpg"), "{e}");
    let mut lenient = ImageFolder::with_options(dir.path(), FolderOptions::default().lenient(true))
        .expect("scan");
    assert_eq!(lenient.verify(2).expect("lenient"), 1);
    assert_eq!(lenient.len(), 3);
    assert!(matches!(
        lenient.warnings()[0].kind,
        WarningKind::Undecodable(_)
    ));
    assert!(lenient.warnings()[0].path.ends_with("broken.jpg"));
}

#[test]
fn split_is_reproducible_and_keras_sized() {
    let dir = tempfile::tempdir().expect("tempdir");
    for c in ["a", "b"] {
        for i in 0..10 {
            std::fs::create_dir_all(dir.path().join(c)).expect("mkdir");
            std::fs::write(dir.path().join(format!("{c}/{i}.png")), png_bytes()).expect("write");
        }
    }
    let f = ImageFolder::new(dir.path()).expect("scan");
    let (t1, v1) = f.split(0.25, 9).expect("split");
    let (t2, v2) = f.split(0.25, 9).expect("split");
    assert_eq!((t1.len(), v1.len()), (15, 5));
    assert_eq!(t1.samples(), t2.samples());
    assert_eq!(v1.samples(), v2.samples());
    let (_, v3) = f.split(0.25, 10).expect("split");
    assert_ne!(v1.samples(), v3.samples());
    assert!(f.split(1.0, 0).is_err());
    assert!(f.split(-0.1, 0).is_err());
}

#[test]
fn hymenoptera_counts_match_torchvision_shared() {
    let Some(root) = common::shared("datasets/hymenoptera_data") else {
        return;
    };
    let sets = TrainVal::open(&root, FolderOptions::default(), 0.2, 0).expect("open");
    assert!(sets.presplit);
    assert_eq!(sets.train.classes(), ["ants", "bees"]);
    assert_eq!((sets.train.len(), sets.val.len()), (244, 153));
    assert_eq!(
        sets.train.class_counts(),
        vec![("ants".into(), 123), ("bees".into(), 121)]
    );
    assert_eq!(
        sets.val.class_counts(),
        vec![("ants".into(), 70), ("bees".into(), 83)]
    );
    // The placeholder GIF is skipped with a warning, or counted when GIFs are accepted.
    let gif = sets
        .train
        .warnings()
        .iter()
        .find(|w| w.path.ends_with("imageNotFound.gif"));
    assert_eq!(gif.map(|w| &w.kind), Some(&WarningKind::NotAnImage));
    let with_gif = ImageFolder::with_options(
        root.join("train"),
        FolderOptions::default().with_extension("gif"),
    )
    .expect("scan");
    assert_eq!(with_gif.len(), 245);
}

#[test]
fn alpaca_split_262_65_shared() {
    let Some(root) = common::shared("datasets/alpaca") else {
        return;
    };
    let sets = TrainVal::open(&root, FolderOptions::default(), 0.2, 42).expect("open");
    assert!(!sets.presplit);
    assert_eq!(sets.train.classes(), ["alpaca", "not alpaca"]);
    assert_eq!((sets.train.len(), sets.val.len()), (262, 65));
    let counts = sets.counts();
    assert_eq!(counts["alpaca"].0 + counts["alpaca"].1, 142);
    assert_eq!(counts["not alpaca"].0 + counts["not alpaca"].1, 185);
    let again = TrainVal::open(&root, FolderOptions::default(), 0.2, 42).expect("open");
    assert_eq!(again.val.samples(), sets.val.samples());
}

#[test]
fn imagenet_samples_with_apostrophes_decode_shared() {
    let Some(dir) = common::shared("datasets/imagenet_samples/images") else {
        return;
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains('\''))
        .collect();
    names.sort();
    assert_eq!(names.len(), 4);
    for p in names {
        decode_rgb(&p, &DecodeOptions::default()).expect("decode");
    }
}

#[test]
fn train_val_layout_and_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_folder(&dir.path().join("train"));
    let e = TrainVal::open(dir.path(), FolderOptions::default(), 0.2, 0).expect_err("no val/");
    assert!(e.path().ends_with("train"), "{e}");
    good_folder(&dir.path().join("val"));
    let sets = TrainVal::open(dir.path(), FolderOptions::default(), 0.2, 0).expect("open");
    assert!(sets.presplit);
    assert_eq!(sets.counts()["cats"], (2, 2));
    write_image(&dir.path().join("val/birds/x.png"), ImageFormat::Png);
    let e =
        TrainVal::open(dir.path(), FolderOptions::default(), 0.2, 0).expect_err("classes differ");
    assert!(matches!(e, DataError::ClassMismatch { .. }), "{e:?}");
}
