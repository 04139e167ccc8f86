//! The code of the README's "Using the crate" section, verbatim (`tests/readme.rs` checks that
//! both are the same and runs this on a subset of the ants/bees data with the real weights).
//! Run from a folder with `data/hymenoptera_data` and `weights/mobilenet_v2_tf_imagenet.onnx`.

// README:start
use transfer_vision::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    reuse_freed_memory(); // one job per process: freed tensors' memory reused, not mapped anew
    let device = Default::default();

    // The network pretrained on ImageNet; the file says how its images must be prepared.
    let (model, import) =
        MobileNetV2::<CpuAutodiff>::from_onnx("weights/mobilenet_v2_tf_imagenet.onnx", &device)?;
    let pre = import.preprocessing;
    let mut sets = TrainVal::open("data/hymenoptera_data", FolderOptions::default(), 0.2, 42)?;
    sets.verify(2)?; // every photo decoded once: damaged ones are listed before any training
    let train = DataLoader::new(&sets.train, pre.train_transform(), LoaderConfig::new(16))?;
    let val_config = LoaderConfig::new(16).with_shuffle(false);
    let val = DataLoader::new(&sets.val, pre.eval_transform(), val_config)?;
    println!("{}", model.summary([3, 224, 224]));

    // Feature extraction (frozen backbone, new head), then fine-tuning from `features.14` on.
    let recipe = TransferRecipe::keras_exercise("features.14");
    CpuAutodiff::seed(&device, 42); // the new head's initial weights, the same on every run
    let model = model.with_new_head(sets.train.classes().len(), &device);
    let head = fit(model, &train, &val, &recipe.feature_extraction, &device)?;
    let tuned = fit(
        head.model.clone(),
        &train,
        &val,
        &recipe.fine_tuning_after(&head),
        &device,
    )?;

    // Both phases plotted, the final accuracy, the model saved with its preprocessing.
    plot_history(&head.history.then(&tuned.history), "history.png".as_ref())?;
    let accuracy = evaluate(&tuned.model, &val, &device)?.accuracy;
    println!("validation accuracy {accuracy:.3}");
    let info = ModelInfo::new(sets.train.classes().to_vec(), pre);
    save_model(&tuned.model, &info, "model.tvm".as_ref())?;
    Ok(())
}
// README:end
