//! The per-element form of a merge: for methods where each output entry depends only on the same entry of the
//! inputs and the plan needs no pass over the data, [`ElementwiseGta`] carries everything a kernel needs as plain
//! numbers, so the merge can run on an accelerator over weights resident there (`evolve`'s GPU merge). Its
//! arithmetic is the CPU kernel's, operation for operation: [`ElementwiseGta::apply`] runs that very kernel.

/// Which entries of one input's delta survive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ElementKeep {
    All,
    None,
    /// DARE: entry `i` survives when `mix64(key + (i + 1)·φ) >> 11 < dare_cut(density)` (see
    /// [`crate::sparsify::dare_keeps_cut`]).
    Random { key: u64, density: f64 },
    /// TIES: the `k` largest |delta| survive (0 < k < numel), ties at the k-th value by position. A plan, not yet
    /// numbers: [`ElementwiseGta::resolve_magnitudes`] (or a kernel elsewhere, from the same data) finds the
    /// threshold and tie cut.
    TopMagnitude { k: usize },
    /// TIES resolved: entries with |delta| > `threshold` survive, and those equal to it up to and including index
    /// `tie_cut`.
    Magnitude { threshold: f32, tie_cut: usize },
}

/// How a surviving delta is scaled before its weight: `d`, `d / s` or `d · s`, then `· weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ElementScale {
    One,
    Div(f32),
    Mul(f32),
}

/// One input (a model other than the base) of an element-wise merge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElementInput {
    pub weight: f32,
    pub keep: ElementKeep,
    pub scale: ElementScale,
}

/// The generalized task-arithmetic merge of one tensor in per-element form (task_arithmetic, dare_linear,
/// dare_ties, ties): `out = base + finish(Σ kept, weighted deltas)`, with sign election when
/// `consensus` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementwiseGta {
    pub inputs: Vec<ElementInput>,
    pub consensus: Option<super::Consensus>,
    pub normalize: bool,
    pub lambda: Option<f32>,
    /// Divisor without sign election (the sum of weights, 1 when it is ~0).
    pub plain_divisor: f32,
}

impl ElementwiseGta {
    /// Computes the merge on the host with the CPU kernel (the reference every other implementation must equal
    /// bit for bit). `inputs[k]` are the values of input `k`; all slices have `out`'s length.
    pub fn apply(&self, base: &[f32], inputs: &[&[f32]], out: &mut [f32]) {
        super::gta::run_elementwise(self, base, inputs, out);
    }

    /// The same merge with every [`ElementKeep::TopMagnitude`] replaced by its threshold and tie cut, found in
    /// the data as the CPU merge finds them.
    pub fn resolve_magnitudes(&self, base: &[f32], inputs: &[&[f32]]) -> ElementwiseGta {
        let mut resolved = self.clone();
        let mut scratch = Vec::new();
        for (input, data) in resolved.inputs.iter_mut().zip(inputs) {
            if let ElementKeep::TopMagnitude { k } = input.keep {
                input.keep = match crate::select::top_k(data, base, k, &mut scratch) {
                    crate::sparsify::Keep::Magnitude { threshold, tie_cut } => ElementKeep::Magnitude { threshold, tie_cut },
                    crate::sparsify::Keep::None => ElementKeep::None,
                    _ => ElementKeep::All,
                };
            }
        }
        resolved
    }

    /// Whether some input's surviving entries still have to be found in the data.
    pub fn needs_magnitudes(&self) -> bool {
        self.inputs.iter().any(|input| matches!(input.keep, ElementKeep::TopMagnitude { .. }))
    }
}

/// Where a [`WeightedSum`] starts its running sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumStart {
    /// `0 + c₀x₀ + c₁x₁ + …` (linear, as mergekit accumulates from zeros).
    Zero,
    /// `c₀x₀ + c₁x₁ + …` (slerp's `s0·v0 + s1·v1`): differs from [`SumStart::Zero`] only in the sign of a zero.
    FirstTerm,
}

/// A merge of one tensor whose every output entry is a fixed weighted sum of the same entry of its rows — the
/// plan's base first when it has one, then its other inputs: `linear`, and `slerp` once the tensor's statistics
/// are known ([`crate::MergeMethod::sum_statistics`]). `out = (Σ_k c_k·x_k) / divisor`, summed in row order,
/// with `c_k·x_k + acc` fused into one rounding when `fused` (mergekit's `addcmul_` in a rounded compute dtype).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedSum {
    pub coefficients: Vec<f32>,
    pub start: SumStart,
    pub fused: bool,
    pub divisor: Option<f32>,
}

impl WeightedSum {
    /// Computes the merge on the host: the CPU kernel of the methods that have this form, and the reference every
    /// other implementation must equal bit for bit. `rows[k]` pairs with `coefficients[k]`; all have `out`'s length.
    pub fn apply(&self, rows: &[&[f32]], out: &mut [f32]) {
        use rayon::prelude::*;
        debug_assert_eq!(rows.len(), self.coefficients.len());
        out.par_chunks_mut(super::CHUNK).enumerate().for_each(|(c, chunk)| {
            let span = c * super::CHUNK..c * super::CHUNK + chunk.len();
            let mut terms = rows.iter().map(|row| &row[span.clone()]).zip(&self.coefficients);
            match self.start {
                SumStart::Zero => chunk.fill(0.0),
                SumStart::FirstTerm => match terms.next() {
                    Some((x, &w)) => chunk.iter_mut().zip(x).for_each(|(o, &x)| *o = w * x),
                    None => chunk.fill(0.0),
                },
            }
            for (x, &w) in terms {
                if self.fused {
                    chunk.iter_mut().zip(x).for_each(|(o, &x)| *o = x.mul_add(w, *o));
                } else {
                    chunk.iter_mut().zip(x).for_each(|(o, &x)| *o += x * w);
                }
            }
            if let Some(divisor) = self.divisor {
                chunk.iter_mut().for_each(|o| *o /= divisor);
            }
        });
    }
}
