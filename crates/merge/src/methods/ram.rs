//! `ram` and `ramplus_tl` (Reinforced Agent Merging, arXiv 2601.13572): a task-vector entry counts
//! as changed when `|x − base| > epsilon`. Entries changed by one model keep that model's change
//! whole; entries changed by several get the mean of their changes (unchanged ones are left out of
//! the mean); entries nobody changed stay at the base. `ramplus_tl` also scales each model's unique
//! changes by `λ = 1 + r · clamp(shared/unique, 0, alpha)`, where `shared` and `unique` count that
//! model's changed entries of this tensor that others also changed / nobody else changed.

use rayon::prelude::*;

use super::{need_base, round_to, rounded::round_f64_to, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;
use evomerge_checkpoint::Dtype;

const ANY: ParamKind = ParamKind::Float { min: None, max: None };

static RAM_PARAMS: [ParamSpec; 1] = [ParamSpec::new("epsilon", ANY, ParamScope::Shared, ParamDefault::Float(1e-5))];

static RAMPLUS_PARAMS: [ParamSpec; 3] = [
    ParamSpec::new("r", ANY, ParamScope::Shared, ParamDefault::Float(0.1)),
    ParamSpec::new("alpha", ANY, ParamScope::Shared, ParamDefault::Float(0.2)),
    ParamSpec::new("epsilon", ANY, ParamScope::Shared, ParamDefault::Float(1e-5)),
];

pub struct Ram {
    /// `ramplus_tl`: scale unique changes by λ.
    plus: bool,
}

pub static RAM: Ram = Ram { plus: false };
pub static RAMPLUS_TL: Ram = Ram { plus: true };

fn float(shared: &ParamSet, name: &str, default: f64) -> f32 {
    // The planner fills defaults in; the fallback only serves direct callers of the kernel.
    shared.float(name).unwrap_or(default) as f32
}

impl MergeMethod for Ram {
    fn name(&self) -> &'static str {
        if self.plus {
            "ramplus_tl"
        } else {
            "ram"
        }
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        if self.plus {
            &RAMPLUS_PARAMS
        } else {
            &RAM_PARAMS
        }
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Required
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (1, None)
    }
    /// mergekit's arithmetic on half-precision tensors (see [`Ram::run`]).
    fn merge_rounded(
        &self,
        dtype: Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        Some(self.run(ctx, shared, base, inputs, out, Some(dtype)))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        self.run(ctx, shared, base, inputs, out, None)
    }
}

impl Ram {
    /// `rounding`: the half-precision dtype mergekit computes in (`None`: f32). Then the task
    /// vectors and the overlap means are rounded to it, epsilon is compared as the dtype holds it,
    /// `ram` sums the models in f32 and rounds that sum before adding the base; in `ramplus_tl`
    /// the f32 λ promotes the unique part, the sum and the base addition to f32.
    fn run(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
        rounding: Option<Dtype>,
    ) -> Result<(), MergeError> {
        let base = base.ok_or_else(|| need_base(ctx, self.name()))?;
        if inputs.is_empty() {
            out.copy_from_slice(base);
            return Ok(());
        }
        let r = |v: f32| rounding.map_or(v, |d| round_to(d, v));
        // The counts' clamp uses epsilon in f32 whatever the tensors' dtype.
        let epsilon = float(shared, "epsilon", 1e-5);
        // mergekit compares the task vector with epsilon rounded to the tensors' dtype.
        let threshold = round_f64_to(rounding.unwrap_or(Dtype::F32), shared.float("epsilon").unwrap_or(1e-5));
        let task = |i: usize, j: usize| r(inputs[i].data[j] - base[j]);
        let changed = |i: usize, j: usize| task(i, j).abs() > threshold;
        let count = |j: usize| (0..inputs.len()).filter(|&i| changed(i, j)).count();

        let lambda: Vec<f32> = if self.plus {
            let (r, alpha) = (float(shared, "r", 0.1), float(shared, "alpha", 0.2));
            // Per model: (changed entries others changed too, changed entries nobody else changed).
            let counts = (0..base.len().div_ceil(CHUNK))
                .into_par_iter()
                .map(|c| {
                    let mut s = vec![(0u64, 0u64); inputs.len()];
                    for j in c * CHUNK..((c + 1) * CHUNK).min(base.len()) {
                        let n = count(j);
                        for (i, s) in s.iter_mut().enumerate() {
                            if changed(i, j) {
                                if n > 1 {
                                    s.0 += 1;
                                } else {
                                    s.1 += 1;
                                }
                            }
                        }
                    }
                    s
                })
                .reduce(
                    || vec![(0, 0); inputs.len()],
                    |mut a, b| {
                        for (a, b) in a.iter_mut().zip(b) {
                            a.0 += b.0;
                            a.1 += b.1;
                        }
                        a
                    },
                );
            // As mergekit: the counts divided in f32, the unique count clamped below at epsilon.
            counts.iter().map(|&(s, u)| 1.0 + r * (s as f32 / (u as f32).max(epsilon)).clamp(0.0, alpha)).collect()
        } else {
            vec![1.0; inputs.len()]
        };

        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                let n = count(j);
                let (unique, overlap) = ((n == 1) as u8 as f32, (n > 1) as u8 as f32);
                let divisor = n.max(1) as f32;
                // mergekit's per-model terms summed over models in order; unchanged entries
                // contribute exact zeros.
                let mut merged = 0f32;
                for (i, &l) in lambda.iter().enumerate() {
                    let tv = task(i, j) * (changed(i, j) as u8 as f32);
                    let own = if self.plus { tv * unique * l } else { tv * unique };
                    let shared_part = r(tv * overlap / divisor);
                    // One of the two is zero: their sum is exact in any dtype.
                    merged += own + shared_part;
                }
                *o = if self.plus { base[j] + merged } else { r(base[j] + r(merged)) };
            }
        });
        Ok(())
    }
}
