//! A `torchsummary`-style table of a model: one row per layer with its output shape and
//! parameter count, then totals and the estimated memory footprint.

use std::fmt;

use burn::tensor::backend::Backend;

use super::layers::{BatchNorm2d, Conv2d, Linear};
use super::state_dict::ParamCount;

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
}

impl LayerRow {
    /// A row from its parts.
    pub fn new(path: &str, kind: &str, output_shape: Vec<usize>, params: usize) -> Self {
        Self {
            path: path.into(),
            kind: kind.into(),
            output_shape,
            params,
        }
    }

    /// Row of a convolution producing `h × w`.
    pub fn conv<B: Backend>(path: &str, conv: &Conv2d<B>, h: usize, w: usize) -> Self {
        let params = conv.weight.shape().num_elements()
            + conv.bias.as_ref().map_or(0, |b| b.shape().num_elements());
        Self::new(path, "Conv2d", vec![conv.out_channels(), h, w], params)
    }

    /// Row of a BatchNorm on `h × w` maps.
    pub fn batch_norm<B: Backend>(path: &str, bn: &BatchNorm2d<B>, h: usize, w: usize) -> Self {
        Self::new(
            path,
            "BatchNorm2d",
            vec![bn.channels(), h, w],
            2 * bn.channels(),
        )
    }

    /// Row of a linear layer.
    pub fn linear<B: Backend>(path: &str, linear: &Linear<B>) -> Self {
        let params = linear.in_features() * linear.out_features() + linear.out_features();
        Self::new(path, "Linear", vec![linear.out_features()], params)
    }
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

    /// Output shape of the last layer.
    pub fn output_shape(&self) -> Vec<usize> {
        self.rows
            .last()
            .map(|r| r.output_shape.clone())
            .unwrap_or_default()
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
        let line = "-".repeat(88);
        writeln!(f, "{line}")?;
        writeln!(
            f,
            "{:>40}  {:<14} {:>18} {:>10}",
            "Layer (path)", "Type", "Output Shape", "Param #"
        )?;
        writeln!(f, "{}", "=".repeat(88))?;
        for row in &self.rows {
            writeln!(
                f,
                "{:>40}  {:<14} {:>18} {:>10}",
                row.path,
                row.kind,
                shape_str(&row.output_shape),
                thousands(row.params)
            )?;
        }
        writeln!(f, "{}", "=".repeat(88))?;
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
