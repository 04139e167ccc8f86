//! A `torchsummary`-style table of a model: one row per layer with its output shape and
//! parameter count, then totals and the estimated memory footprint.
//!
//! Like torchsummary's hooks, the rows come from a real forward pass: while a summary is being
//! taken, every layer reports its output shape to a thread-local recorder. A model therefore
//! needs no second, hand-kept description of its layers: the table follows `forward`.

use crate::kernels::ConvBackend;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use burn::module::ParamId;
use burn::tensor::Tensor;

use super::ImageClassifier;
use super::state_dict::{ParamCount, param_count, state_dict};

/// One layer of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    /// Parameter path of the layer (`features.2.conv.0.0`).
    pub path: String,
    /// Layer type as torchvision names it (`Conv2d`, `BatchNorm2d`, `Linear`, ...).
    pub kind: String,
    /// Output shape without the batch dimension.
    pub output_shape: Vec<usize>,
    /// Number of parameters of this layer.
    pub params: usize,
    /// Elements per image of the layer's unfolded input, the `im2col` columns a backend may
    /// build for a dense convolution with a kernel over 1×1 (and for its gradients):
    /// `C_in · k² · H_out · W_out`; 0 for other layers.
    pub unfolded: usize,
}

impl LayerRow {
    /// A row from its parts.
    pub fn new(path: &str, kind: &str, output_shape: Vec<usize>, params: usize) -> Self {
        Self {
            path: path.into(),
            kind: kind.into(),
            output_shape,
            params,
            unfolded: 0,
        }
    }

    /// This row with `unfolded` elements of unfolded input per image.
    pub fn with_unfolded(self, unfolded: usize) -> Self {
        Self { unfolded, ..self }
    }

    /// The most elements one buffer of this layer holds per image: its output (and the
    /// output's gradient), or its unfolded input where that is larger.
    pub fn largest_buffer(&self) -> usize {
        self.output_elements().max(self.unfolded)
    }

    /// Whether the unfolded input, not the output, is this layer's largest buffer.
    pub fn largest_is_unfolded(&self) -> bool {
        self.unfolded > self.output_elements()
    }

    fn output_elements(&self) -> usize {
        self.output_shape.iter().product()
    }
}

/// A layer as it reported itself during the forward pass: by the id of its weight (its path is
/// looked up afterwards) or, for layers without parameters, by the path the model gave.
enum Recorded {
    Weighted(ParamId, LayerRow),
    Named(LayerRow),
}

thread_local! {
    static RECORDER: RefCell<Option<Vec<Recorded>>> = const { RefCell::new(None) };
}

fn push(entry: Recorded) {
    RECORDER.with(|r| {
        if let Some(rows) = r.borrow_mut().as_mut() {
            rows.push(entry);
        }
    });
}

/// This thread's recorder switched on, for one forward pass; dropped (even by a panic), it
/// puts back what was there before.
struct Recording {
    previous: Option<Option<Vec<Recorded>>>,
}

impl Recording {
    fn start() -> Self {
        let previous = RECORDER.with(|r| r.borrow_mut().replace(Vec::new()));
        Self {
            previous: Some(previous),
        }
    }

    /// What was recorded.
    fn finish(mut self) -> Vec<Recorded> {
        let previous = self.previous.take().flatten();
        RECORDER
            .with(|r| std::mem::replace(&mut *r.borrow_mut(), previous))
            .unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            RECORDER.with(|r| *r.borrow_mut() = previous);
        }
    }
}

/// Called by layers with weights at the end of their forward pass: `dims` is the output shape
/// with the batch dimension. A no-op unless a summary is being taken on this thread.
pub(crate) fn record_layer(weight: ParamId, kind: &str, dims: &[usize], params: usize) {
    record_row(weight, LayerRow::new("", kind, dims[1..].to_vec(), params));
}

/// [`record_layer`] for a row already built (a convolution adds its unfolded size).
pub(crate) fn record_row(weight: ParamId, row: LayerRow) {
    push(Recorded::Weighted(weight, row));
}

/// Called by the models for layers without parameters (pools, dropout), which have no weight
/// to be found by.
pub(crate) fn record_named(path: &str, kind: &str, dims: &[usize]) {
    push(Recorded::Named(LayerRow::new(
        path,
        kind,
        dims[1..].to_vec(),
        0,
    )));
}

/// The printable summary of a model for one input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Input shape `[3, H, W]`.
    pub input: [usize; 3],
    /// Layers in execution order.
    pub rows: Vec<LayerRow>,
    /// Parameter counts.
    pub params: ParamCount,
}

impl Summary {
    /// Assembles a summary.
    pub fn new(input: [usize; 3], rows: Vec<LayerRow>, params: ParamCount) -> Self {
        Self {
            input,
            rows,
            params,
        }
    }

    /// Runs `model` in inference mode on one zero image of shape `input` and records every
    /// layer it passes through. The networks take RGB images of at least 32 × 32 pixels: the
    /// channel count is taken as 3, and smaller sides as 32.
    pub fn of<B: ConvBackend, M: ImageClassifier<B>>(model: &M, input: [usize; 3]) -> Self {
        let params = param_count(model);
        let inference = model.clone().no_grad();
        let device = inference.devices().into_iter().next().unwrap_or_default();
        let input = [3, input[1].max(32), input[2].max(32)];
        let [c, h, w] = input;
        // The recorder is the thread's own: recorded on the thread that runs the pass (where
        // the pass would move to, it runs in place).
        let recorded = B::on_kernel_threads(|| {
            let recording = Recording::start();
            let _ = inference.forward(Tensor::zeros([1, c, h, w], &device));
            recording.finish()
        });
        // The module that owns each weight: `features.0.0` for `features.0.0.weight`.
        let owners: HashMap<ParamId, String> = state_dict(&inference)
            .into_iter()
            .filter_map(|e| Some((e.id, e.key.strip_suffix(".weight")?.to_string())))
            .collect();
        let rows = recorded
            .into_iter()
            .map(|entry| match entry {
                Recorded::Named(row) => row,
                Recorded::Weighted(id, row) => LayerRow {
                    path: owners.get(&id).cloned().unwrap_or_default(),
                    ..row
                },
            })
            .collect();
        Self::new(input, rows, params)
    }

    /// Output shape of the last layer.
    pub fn output_shape(&self) -> Vec<usize> {
        self.rows
            .last()
            .map(|r| r.output_shape.clone())
            .unwrap_or_default()
    }

    /// The layer with the largest buffer per image ([`LayerRow::largest_buffer`]); the
    /// input image counts as a layer named `input`. Sizes a batch to a backend's buffer limit.
    pub fn largest_buffer(&self) -> LayerRow {
        let input = LayerRow::new("input", "Input", self.input.to_vec(), 0);
        self.rows.iter().fold(input, |largest, row| {
            if row.largest_buffer() > largest.largest_buffer() {
                row.clone()
            } else {
                largest
            }
        })
    }

    /// Size estimates in MB (f32, batch 1), as torchsummary computes them:
    /// `(input, forward/backward activations ×2, parameters)`.
    pub fn sizes_mb(&self) -> (f64, f64, f64) {
        let mb = |n: usize| n as f64 * 4.0 / (1024.0 * 1024.0);
        let input: usize = self.input.iter().product();
        let activations: usize = self
            .rows
            .iter()
            .map(|r| r.output_shape.iter().product::<usize>())
            .sum();
        (mb(input), mb(2 * activations), mb(self.params.total))
    }
}

fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once("-1".to_string())
        .chain(shape.iter().map(|d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = "-".repeat(91);
        writeln!(f, "{line}")?;
        writeln!(
            f,
            "{:>40}  {:<17} {:>18} {:>10}",
            "Layer (path)", "Type", "Output Shape", "Param #"
        )?;
        writeln!(f, "{}", "=".repeat(91))?;
        for row in &self.rows {
            writeln!(
                f,
                "{:>40}  {:<17} {:>18} {:>10}",
                row.path,
                row.kind,
                shape_str(&row.output_shape),
                thousands(row.params)
            )?;
        }
        writeln!(f, "{}", "=".repeat(91))?;
        let ParamCount { total, trainable } = self.params;
        writeln!(f, "Total params: {}", thousands(total))?;
        writeln!(f, "Trainable params: {}", thousands(trainable))?;
        writeln!(f, "Non-trainable params: {}", thousands(total - trainable))?;
        writeln!(f, "{line}")?;
        let (input, act, params) = self.sizes_mb();
        writeln!(f, "Input size (MB): {input:.2}")?;
        writeln!(f, "Forward/backward pass size (MB): {act:.2}")?;
        writeln!(f, "Params size (MB): {params:.2}")?;
        writeln!(f, "Estimated Total Size (MB): {:.2}", input + act + params)?;
        write!(f, "{line}")
    }
}
