//! Adam's update of one parameter tensor in one pass over its elements, in place.
//!
//! burn's `Adam` runs a step as about ten tensor operations, each one pass over the parameter
//! and most into a fresh buffer: over ResNet18's `layer4` (8.4 M weights) 42–64 ms of a
//! last-blocks training step on 2 cores, spent in memory traffic and page faults, where this
//! takes 10 ms (BENCHMARKS.md). Here each element is read and written once, with the same f32
//! operations in the same order as burn's (`burn-optim` 0.21, `optim/adam.rs`), so the results
//! are the same bits: no fused multiply-add, which Rust never contracts on its own.

use rayon::prelude::*;

pub use crate::kernels::AdamCoefficients;

/// Elements per parallel task (128 KiB of each operand): enough to amortise the scheduling.
const CHUNK: usize = 1 << 15;

// The element formulas beside the kernel that uses them (compiled with burn-flex only).
impl AdamCoefficients {
    /// The gradient as Adam's moments see it: with the L2 penalty added (`param · λ + grad`).
    #[inline(always)]
    fn decayed(&self, param: f32, grad: f32) -> f32 {
        match self.penalty {
            Some(penalty) => param * penalty + grad,
            None => grad,
        }
    }

    /// The new parameter from the updated moments.
    #[inline(always)]
    fn updated(&self, param: f32, moment_1: f32, moment_2: f32) -> f32 {
        let delta = (moment_1 * self.combined) / (moment_2.sqrt() + self.epsilon);
        param - delta * self.lr
    }
}

/// A later step: updates `param`, `moment_1` and `moment_2` (all `grad`'s length) in place.
pub fn step_in_place(
    param: &mut [f32],
    grad: &[f32],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    c: &AdamCoefficients,
) {
    for_each_element(param, grad, moment_1, moment_2, |p, g, m1, m2| {
        let g = c.decayed(*p, g);
        *m1 = *m1 * c.beta_1 + g * c.factor_1;
        *m2 = *m2 * c.beta_2 + (g * g) * c.factor_2;
        *p = c.updated(*p, *m1, *m2);
    });
}

/// The first step (no moments yet): updates `param` in place and returns the moments. Not
/// [`step_in_place`] on zero moments: `0 · β + x` is `+0` where burn's first step keeps `x = -0`.
pub fn first_step_in_place(
    param: &mut [f32],
    grad: &[f32],
    c: &AdamCoefficients,
) -> (Vec<f32>, Vec<f32>) {
    let (mut moment_1, mut moment_2) = (vec![0.0; grad.len()], vec![0.0; grad.len()]);
    for_each_element(param, grad, &mut moment_1, &mut moment_2, |p, g, m1, m2| {
        let g = c.decayed(*p, g);
        *m1 = g * c.factor_1;
        *m2 = (g * g) * c.factor_2;
        *p = c.updated(*p, *m1, *m2);
    });
    (moment_1, moment_2)
}

/// Runs `update(param, grad, moment_1, moment_2)` on every element, [`CHUNK`]s in parallel.
fn for_each_element(
    param: &mut [f32],
    grad: &[f32],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    update: impl Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
) {
    let n = param.len();
    assert!(
        grad.len() == n && moment_1.len() == n && moment_2.len() == n,
        "Adam step: parameter, gradient and moments differ in length"
    );
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(moment_1.par_chunks_mut(CHUNK))
        .zip(moment_2.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m1), m2)| {
            for (((p, &g), m1), m2) in p.iter_mut().zip(g).zip(m1).zip(m2) {
                update(p, g, m1, m2);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The update written out as burn's tensor operations run it, one operation per line.
    fn reference(p: f32, g: f32, m: Option<(f32, f32)>, c: &AdamCoefficients) -> [f32; 3] {
        let g = match c.penalty {
            Some(l) => p * l + g,
            None => g,
        };
        let (m1, m2) = match m {
            Some((m1, m2)) => (
                m1 * c.beta_1 + g * c.factor_1,
                m2 * c.beta_2 + g * g * c.factor_2,
            ),
            None => (g * c.factor_1, g * g * c.factor_2),
        };
        let num = m1 * c.combined;
        let den = m2.sqrt() + c.epsilon;
        let delta = (num / den) * c.lr;
        [p - delta, m1, m2]
    }

    #[test]
    fn steps_equal_the_operation_by_operation_update_across_chunks() {
        let n = 2 * CHUNK + 37;
        let value = |i: usize, k: f32| ((i as f32 * 0.618 + k).sin()) * 0.3;
        let grad: Vec<f32> = (0..n).map(|i| value(i, 1.0)).collect();
        for penalty in [None, Some(1e-4)] {
            let mut param: Vec<f32> = (0..n).map(|i| value(i, 2.0)).collect();
            let first = AdamCoefficients::new(0.9, 0.999, 1e-8, penalty, 1e-3, 1);
            let expected: Vec<[f32; 3]> = (0..n)
                .map(|i| reference(param[i], grad[i], None, &first))
                .collect();
            let (mut m1, mut m2) = first_step_in_place(&mut param, &grad, &first);
            for i in 0..n {
                assert_eq!(
                    [param[i], m1[i], m2[i]],
                    expected[i],
                    "first step, element {i}"
                );
            }
            let second = AdamCoefficients::new(0.9, 0.999, 1e-8, penalty, 1e-3, 2);
            let expected: Vec<[f32; 3]> = (0..n)
                .map(|i| reference(param[i], grad[i], Some((m1[i], m2[i])), &second))
                .collect();
            step_in_place(&mut param, &grad, &mut m1, &mut m2, &second);
            for i in 0..n {
                assert_eq!(
                    [param[i], m1[i], m2[i]],
                    expected[i],
                    "second step, element {i}"
                );
            }
        }
    }

    #[test]
    fn coefficients_fold_the_bias_corrections() {
        let c = AdamCoefficients::new(0.9, 0.999, 1e-8, None, 1e-3, 3);
        let b2 = (1.0f32 - 0.999f32.powi(3)).sqrt();
        assert_eq!(c.combined, b2 / (1.0 - 0.9f32.powi(3)));
        assert_eq!(c.epsilon, 1e-8 * b2);
        assert_eq!(c.lr, 1e-3f64 as f32);
    }
}
