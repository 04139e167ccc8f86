//! Inference times through tract (the pure-Rust ONNX engine) for `benches/compare.py`.
//!
//! `tract-bench --threads 2 --repeats 10 --warmup 3 --batches 1,16 NAME=SIZE=PATH ...` loads
//! each ONNX file (input `[batch, 3, SIZE, SIZE]`), optimises it for each batch size, times
//! `repeats` runs after `warmup` untimed ones, and prints one JSON object per line:
//! `{"engine":"tract","model":NAME,"size":SIZE,"batch":B,"median_ms":...,"runs_ms":[...]}`.
//! A file tract cannot load or run (an unsupported operator) is reported on stderr and skipped;
//! the others are still measured, and the exit status is then 1.

use std::process::ExitCode;
use std::time::Instant;

use tract_linalg::multithread::{Executor, set_default_executor};
use tract_onnx::prelude::*;

struct Args {
    threads: usize,
    repeats: usize,
    warmup: usize,
    batches: Vec<usize>,
    models: Vec<(String, usize, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { threads: 2, repeats: 10, warmup: 3, batches: vec![1, 16], models: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |text: String, name: &str| text.parse::<usize>().map_err(|e| format!("{name} {text:?}: {e}"));
        match arg.as_str() {
            "--threads" => args.threads = number(value("--threads")?, "--threads")?,
            "--repeats" => args.repeats = number(value("--repeats")?, "--repeats")?,
            "--warmup" => args.warmup = number(value("--warmup")?, "--warmup")?,
            "--batches" => {
                args.batches = value("--batches")?
                    .split(',')
                    .map(|b| b.trim().parse::<usize>().map_err(|e| format!("--batches {b:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            spec => {
                let mut parts = spec.splitn(3, '=');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(size), Some(path)) => {
                        args.models.push((name.to_string(), number(size.to_string(), "SIZE")?, path.to_string()))
                    }
                    _ => return Err(format!("expected NAME=SIZE=PATH, got {spec:?}")),
                }
            }
        }
    }
    if args.models.is_empty() || args.repeats == 0 {
        return Err("usage: tract-bench [--threads N] [--repeats N] [--warmup N] [--batches 1,16] NAME=SIZE=PATH ...".into());
    }
    Ok(args)
}

fn time_model(path: &str, size: usize, batch: usize, args: &Args) -> TractResult<Vec<f64>> {
    let model = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact([batch, 3, size, size]).into())?
        .into_optimized()?
        .into_runnable()?;
    let mut seed = 0x9e37_79b9u32;
    let input: Tensor = tract_ndarray::Array4::<f32>::from_shape_fn((batch, 3, size, size), |_| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
    })
    .into();
    for _ in 0..args.warmup {
        model.run(tvec!(input.clone().into()))?;
    }
    let mut runs = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let start = Instant::now();
        let out = model.run(tvec!(input.clone().into()))?;
        runs.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    Ok(runs)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("tract-bench: {message}");
            return ExitCode::from(2);
        }
    };
    if args.threads > 1 {
        set_default_executor(Executor::multithread(args.threads));
    }
    let mut failed = false;
    for (name, size, path) in &args.models {
        for &batch in &args.batches {
            match time_model(path, *size, batch, &args) {
                Ok(runs) => {
                    let mut sorted = runs.clone();
                    sorted.sort_by(f64::total_cmp);
                    let median = sorted[sorted.len() / 2];
                    println!(
                        "{{\"engine\":\"tract\",\"model\":\"{name}\",\"size\":{size},\"batch\":{batch},\"threads\":{},\"median_ms\":{median:.3},\"runs_ms\":{runs:?}}}",
                        args.threads
                    );
                }
                Err(e) => {
                    eprintln!("tract-bench: {path} at batch {batch}: {e:#}");
                    failed = true;
                }
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
