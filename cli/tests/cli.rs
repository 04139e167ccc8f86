//! The `transfer-vision` command as a user runs it: a whole train → eval → predict → export
//! path on a small generated data set with randomly initialised weights (no `../shared`
//! needed), and every refusal the issue lists, each a one-line error naming the thing with exit
//! status 2 (usage) or 1 (data), never a panic or a run folder that looks complete.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use transfer_vision::backend::Cpu;
use transfer_vision::data::Preprocessing;
use transfer_vision::models::{ImageClassifier, MobileNetV2Config};
use transfer_vision::weights::{ModelInfo, export_onnx};

/// The command built beside this test.
fn tv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transfer-vision"))
        .args(args)
        .output()
        .expect("the transfer-vision binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts exit status `code`, no panic, and `expected` in stderr.
fn assert_fails(args: &[&str], code: i32, expected: &str) {
    let out = tv(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(
        err.contains(expected),
        "{args:?}: stderr lacks {expected:?}:\n{err}"
    );
}

/// A folder of class folders, `n` 40×40 PNGs each: class `i` mostly colour channel `i`, with
/// noise, so that even a small run learns something.
fn dataset(root: &Path, classes: &[(&str, usize)]) -> PathBuf {
    for (c, (name, n)) in classes.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..*n {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let noise = ((x * 31 + y * 17 + i as u32 * 7) % 64) as u8;
                let mut p = [noise; 3];
                p[c % 3] = 160 + noise;
                image::Rgb(p)
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
    root.to_path_buf()
}

/// A randomly initialised ImageNet-shaped MobileNetV2 as ONNX, prepared for 32-pixel inputs.
fn random_weights(dir: &Path) -> PathBuf {
    let device = Default::default();
    let model = MobileNetV2Config::new().init::<Cpu>(&device);
    let names = (0..model.num_classes())
        .map(|i| format!("class{i}"))
        .collect();
    let path = dir.join("random_mobilenet_v2.onnx");
    export_onnx(
        &model,
        &ModelInfo::new(names, Preprocessing::imagenet(32)),
        &path,
    )
    .unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_eval_predict_export_on_a_folder_it_never_saw() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("colours"), &[("blue", 8), ("red", 8)]);
    let weights = random_weights(tmp.path());
    let run = tmp.path().join("run");
    let train = [
        "train",
        "--data",
        s(&data),
        "--weights",
        s(&weights),
        "--out",
        s(&run),
        "--epochs-head",
        "1",
        "--epochs-finetune",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--quiet",
    ];
    let out = tv(&train);
    assert!(out.status.success(), "train failed:\n{}", stderr(&out));
    for file in [
        "model.tvm",
        "metrics.json",
        "history.png",
        "predictions.png",
        "confusion_matrix.png",
        "top_losses.png",
        "grad_cam.png",
    ] {
        let len = std::fs::metadata(run.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{file} missing or empty");
    }
    assert!(
        !run.join("INCOMPLETE").exists(),
        "finished run still marked incomplete"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let trained = &metrics["final_evaluation"];

    // eval finds the same validation images (the model file records the split) and the same
    // accuracy, exactly.
    let model = run.join("model.tvm");
    let out = tv(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--json",
        "--workers",
        "1",
    ]);
    assert!(out.status.success(), "eval failed:\n{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["images"], trained["count"]);
    assert_eq!(report["accuracy"], trained["accuracy"]);
    assert_eq!(report["confusion"], trained["confusion"]);
    assert_eq!(report["classes"], serde_json::json!(["blue", "red"]));
    assert!(run.join("eval/eval.json").exists());
    assert!(run.join("eval/confusion_matrix.png").exists());

    // predict with the saved model, then with its ONNX export: same classes, same numbers.
    let image = data.join("red/3.png");
    let out = tv(&["predict", "--model", s(&model), "--json", s(&image)]);
    assert!(out.status.success(), "predict failed:\n{}", stderr(&out));
    let saved: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let onnx = tmp.path().join("exported/colours.onnx");
    let out = tv(&["export", "--model", s(&model), "--onnx", s(&onnx)]);
    assert!(out.status.success(), "export failed:\n{}", stderr(&out));
    assert!(stdout(&out).contains("read back"), "{}", stdout(&out));
    let out = tv(&["predict", "--model", s(&onnx), "--json", s(&image)]);
    assert!(
        out.status.success(),
        "predict (onnx) failed:\n{}",
        stderr(&out)
    );
    let exported: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(exported["names"], saved["names"]);
    assert_eq!(exported["indices"], saved["indices"]);
    let (a, b) = (&saved["probabilities"], &exported["probabilities"]);
    for i in 0..2 {
        let (a, b) = (a[i].as_f64().unwrap(), b[i].as_f64().unwrap());
        assert!(
            (a - b).abs() < 1e-4,
            "probabilities {a} (tvm) vs {b} (onnx)"
        );
    }

    // The finished run is not overwritten by accident.
    assert_fails(&train, 2, "holds a finished run");
}

#[test]
fn devices_lists_what_device_can_name() {
    let out = tv(&["devices"]);
    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("cpu: the CPU"), "{text}");
    // Each GPU backend either lists its devices or says how to build it in.
    let wgpu = if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "--features wgpu"
    };
    assert!(text.contains(wgpu), "{text}");
    let cuda = if cfg!(feature = "cuda") {
        "cuda:N"
    } else {
        "--features cuda"
    };
    assert!(text.contains(cuda), "{text}");
}

#[test]
fn bad_command_lines_exit_2() {
    assert_fails(&[], 2, "Usage");
    assert_fails(&["train"], 2, "--data");
    assert_fails(&["train", "--data", ".", "--model", "vgg16"], 2, "--model");
    assert_fails(
        &["train", "--data", ".", "--val-fraction", "1.5"],
        2,
        "--val-fraction",
    );
    assert_fails(&["train", "--data", ".", "--device", "tpu"], 2, "tpu");
    if cfg!(feature = "wgpu") {
        assert_fails(
            &["train", "--data", ".", "--device", "wgpu:99"],
            2,
            "wgpu:99",
        );
    } else {
        assert_fails(
            &["train", "--data", ".", "--device", "wgpu"],
            2,
            "--features wgpu",
        );
    }
    assert_fails(
        &["train", "--data", "/no/such/folder"],
        2,
        "/no/such/folder",
    );
    assert_fails(&["predict", "--model", "m.tvm"], 2, "IMAGES");
    assert_fails(
        &["eval", "--model", "/no/model.tvm", "--data", "."],
        2,
        "/no/model.tvm",
    );
    assert_fails(&["export", "--model", "m.tvm"], 2, "--onnx");
    for sub in ["train", "eval", "predict", "export"] {
        let out = tv(&[sub, "--help"]);
        assert!(
            out.status.success() && stdout(&out).contains("Usage"),
            "{sub} --help"
        );
    }
}

#[test]
fn bad_data_exits_1_naming_the_folder_or_file() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = random_weights(tmp.path());
    let w = s(&weights);
    let single = dataset(&tmp.path().join("single"), &[("only", 6)]);
    let hollow = dataset(&tmp.path().join("hollow"), &[("a", 6), ("b", 0)]);
    let presplit = tmp.path().join("presplit");
    dataset(&presplit.join("train"), &[("a", 4), ("b", 4)]);
    dataset(&presplit.join("val"), &[("a", 2)]);
    let out_dir = tmp.path().join("out");
    let o = s(&out_dir);
    for (data, expected) in [
        (&single, "at least 2 class folders"),
        (&hollow, "holds no image"),
        (&presplit, "val"),
    ] {
        assert_fails(
            &["train", "--data", s(data), "--weights", w, "--out", o],
            1,
            expected,
        );
        assert!(
            !out_dir.exists(),
            "{}: a run folder was left behind",
            data.display()
        );
    }

    // A damaged photo: listed by name; --skip-bad-images trains without it.
    let damaged = dataset(&tmp.path().join("damaged"), &[("a", 6), ("b", 6)]);
    let png = std::fs::read(damaged.join("a/1.png")).unwrap();
    std::fs::write(damaged.join("a/1.png"), &png[..png.len() / 2]).unwrap();
    let args = [
        "train",
        "--data",
        s(&damaged),
        "--weights",
        w,
        "--out",
        o,
        "--image-size",
        "32",
        "--epochs-head",
        "1",
        "--epochs-finetune",
        "0",
        "--quiet",
        "--workers",
        "1",
    ];
    assert_fails(&args, 1, "1.png");
    assert!(!out_dir.exists(), "a run folder was left behind");
    let mut lenient = args.to_vec();
    lenient.push("--skip-bad-images");
    let out = tv(&lenient);
    assert!(out.status.success(), "--skip-bad-images:\n{}", stderr(&out));
    assert!(stderr(&out).contains("1.png"), "no warning naming the file");

    // Model files of another kind, corrupt, or of another architecture.
    let data = dataset(&tmp.path().join("ok"), &[("a", 6), ("b", 6)]);
    let d = s(&data);
    let photo = data.join("a/0.png");
    assert_fails(
        &["train", "--data", d, "--weights", s(&photo), "--out", o],
        1,
        "0.png",
    );
    assert_fails(
        &[
            "train",
            "--data",
            d,
            "--weights",
            w,
            "--model",
            "resnet18",
            "--out",
            o,
        ],
        1,
        "resnet18",
    );
    assert_fails(&["predict", "--model", s(&photo), s(&photo)], 1, "0.png");
    let model = out_dir.join("model.tvm");
    let bytes = std::fs::read(&model).unwrap();
    let cut = tmp.path().join("cut.tvm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(&["eval", "--model", s(&cut), "--data", d], 1, "cut.tvm");
    assert_fails(
        &["export", "--model", s(&cut), "--onnx", "x.onnx"],
        1,
        "cut.tvm",
    );
    assert_fails(
        &["export", "--model", s(&weights), "--onnx", "x.onnx"],
        1,
        "random_mobilenet_v2.onnx",
    );

    // eval on a folder whose classes are not the model's.
    let other = dataset(&tmp.path().join("other"), &[("cat", 3), ("dog", 3)]);
    assert_fails(
        &[
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&other),
            "--split",
            "all",
        ],
        1,
        "cat",
    );
    // An unknown block to unfreeze is refused before any folder is made.
    let fresh = tmp.path().join("fresh");
    assert_fails(
        &[
            "train",
            "--data",
            d,
            "--weights",
            w,
            "--out",
            s(&fresh),
            "--unfreeze-from",
            "layer9",
        ],
        2,
        "layer9",
    );
    assert!(!fresh.exists());
}
