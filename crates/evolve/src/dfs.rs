//! The data-flow-space genome (the paper's DFS): which layers of a pool of models a token passes
//! through, in which order, and how the hidden state is scaled at each hop.
//!
//! The pool holds the layers of every model in `dfs.models`, in order (M layers in all). A path is
//! drawn from T = M·r slots, the pool repeated r times: slot t stands for pool layer t mod M and is
//! on the path when its indicator gene is positive; slots on the path are visited in slot order. The
//! scales are one gene per slot (`per_hop`) or the paper's M×M matrix W on transitions (`matrix`:
//! the hop from pool layer i to pool layer j gets W\[i\]\[j\], the first hop 1).
//!
//! Scales are applied as SakanaAI's released `evomistral` applies them (the hop's scale multiplies
//! the previous layer's MLP branch, on hop 0 the embeddings: [`ScaleConvention::ReleasedBranch`]), so
//! every searched path, `matrix` ones included, is exported exactly as per-hop `input_scales`.
//!
//! The initial point is the paper's: indicators 0 except the first repetition of the first model's
//! layers, at 2σ (so the mean path is the first model itself); scales 1. With `fixed_ends` the first
//! model's first and last layers start and end every path and have no indicator gene.

use evomerge_mistral::{Hop, LayerPath, ScaleConvention};
use serde::{Deserialize, Serialize};

use crate::error::{EvolveError, Result};
use crate::genome::{unique_labels, SearchSpace};

/// The `dfs:` section of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DfsSpec {
    /// The models whose layers form the pool (one architecture and width); `ps` is this recipe's
    /// parameter-space result.
    pub models: Vec<String>,
    /// r: the pool is repeated r times, T = M·r slots.
    #[serde(default = "default_repeats")]
    pub repeats: usize,
    #[serde(default)]
    pub scales: ScaleGenes,
    /// The first model's first and last layers start and end every path (as the paper).
    #[serde(default = "yes")]
    pub fixed_ends: bool,
    /// 0: no limit; else a path with more hops is infeasible (recorded as failed, never evaluated).
    #[serde(default)]
    pub max_hops: usize,
    /// Search bounds of the scale genes.
    #[serde(default = "default_scale_bounds")]
    pub scale_bounds: [f64; 2],
    /// The pool model's dtype (default: the genome's, else bfloat16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Trials of the DFS phase (default: `optimizer.max_trials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_trials: Option<u64>,
    /// CMA-ES population of the DFS phase (default: `optimizer.population`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<usize>,
}

/// How the scales are parametrised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleGenes {
    /// One scale gene per slot, used when the slot is on the path.
    #[default]
    PerHop,
    /// The paper's M×M matrix on transitions between pool layers.
    Matrix,
}

fn default_repeats() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn default_scale_bounds() -> [f64; 2] {
    [0.0, 2.0]
}

/// The name under which `dfs.models` refers to the parameter-space result of the same recipe.
pub const PS_MODEL: &str = "ps";

impl DfsSpec {
    pub fn is_ps(model: &str) -> bool {
        model == PS_MODEL
    }

    /// Whether the pool includes the parameter-space result (a PS+DFS recipe).
    pub fn uses_ps(&self) -> bool {
        self.models.iter().any(|m| Self::is_ps(m))
    }

    /// Checks that need no model.
    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            return Err(EvolveError::recipe("dfs.models", "list at least one model"));
        }
        for (i, m) in self.models.iter().enumerate() {
            if self.models[..i].contains(m) {
                return Err(EvolveError::recipe(
                    format!("dfs.models[{i}]"),
                    format!("`{m}` is listed twice (the pool repeats through `repeats`)"),
                ));
            }
        }
        if self.repeats == 0 {
            return Err(EvolveError::recipe("dfs.repeats", "must be at least 1 (T = M·r slots)"));
        }
        let [lo, hi] = self.scale_bounds;
        if !(lo.is_finite() && hi.is_finite() && lo < hi && lo <= 1.0 && 1.0 <= hi) {
            return Err(EvolveError::recipe(
                "dfs.scale_bounds",
                format!("[{lo}, {hi}] must be a finite interval holding 1 (the initial scale)"),
            ));
        }
        if let Some(d) = &self.dtype {
            if crate::recipe::parse_dtype(d).is_none() {
                return Err(EvolveError::recipe("dfs.dtype", format!("unknown dtype `{d}`; use float32, float16 or bfloat16")));
            }
        }
        if self.max_trials == Some(0) {
            return Err(EvolveError::recipe("dfs.max_trials", "must be at least 1"));
        }
        if self.population == Some(1) {
            return Err(EvolveError::recipe("dfs.population", "must be 0 (CMA-ES's default) or at least 2"));
        }
        Ok(())
    }
}

/// One gene of the DFS genome.
#[derive(Debug, Clone, PartialEq)]
pub struct DfsGene {
    /// `in.<model>.L<layer>.r<rep>` (indicator), `scale.<model>.L<layer>.r<rep>` (per hop) or
    /// `scale.<model>.L<i>><model>.L<j>` (matrix).
    pub name: String,
    pub lower: f64,
    pub upper: f64,
    pub init: f64,
}

/// The DFS genome over a pool: gene layout and the path of a vector.
#[derive(Debug, Clone)]
pub struct DfsSpace {
    /// Short names of the pool's models (for gene names and plots).
    pub labels: Vec<String>,
    /// Layers of each model; the pool is their concatenation.
    pub layers: Vec<usize>,
    pub repeats: usize,
    pub scales: ScaleGenes,
    pub fixed_ends: bool,
    pub max_hops: usize,
    pub genes: Vec<DfsGene>,
    /// Per slot: its indicator gene, `None` for a fixed end.
    indicator: Vec<Option<usize>>,
    /// Per slot (`per_hop`): its scale gene; `None` for the fixed start.
    slot_scale: Vec<Option<usize>>,
    /// Index of W\[0\]\[0\] (`matrix`).
    matrix_start: usize,
}

impl DfsSpace {
    /// The genome of `spec` over models with `layers[k]` layers each (σ: CMA-ES's initial step, for
    /// the paper's 2σ start).
    pub fn new(spec: &DfsSpec, layers: Vec<usize>, sigma0: f64) -> Result<Self> {
        if layers.contains(&0) {
            return Err(EvolveError::recipe("dfs.models", "a model of the pool has no layers"));
        }
        let labels = unique_labels(&spec.models);
        let m: usize = layers.iter().sum();
        let first = layers[0];
        if spec.fixed_ends && first < 2 && spec.max_hops == 1 {
            return Err(EvolveError::recipe("dfs.max_hops", "1 hop cannot hold the fixed first and last layers"));
        }
        let t_total = m * spec.repeats;
        let fixed = |t: usize| spec.fixed_ends && (t == 0 || t == first - 1);
        let mut genes = Vec::new();
        let mut indicator = vec![None; t_total];
        let [lo, hi] = spec.scale_bounds;
        let name_of = |t: usize| {
            let (model, layer) = locate(&layers, t % m);
            format!("{}.L{layer}.r{}", labels[model], t / m)
        };
        for (t, slot) in indicator.iter_mut().enumerate() {
            if fixed(t) {
                continue;
            }
            *slot = Some(genes.len());
            // The first repetition of the first model starts on the path (2σ), the rest undecided (0).
            let init = if t < first { 2.0 * sigma0 } else { 0.0 };
            genes.push(DfsGene { name: format!("in.{}", name_of(t)), lower: -1.0, upper: 1.0, init });
        }
        let mut slot_scale = vec![None; t_total];
        let mut matrix_start = 0;
        match spec.scales {
            ScaleGenes::PerHop => {
                for (t, slot) in slot_scale.iter_mut().enumerate() {
                    if spec.fixed_ends && t == 0 {
                        continue;
                    }
                    *slot = Some(genes.len());
                    genes.push(DfsGene { name: format!("scale.{}", name_of(t)), lower: lo, upper: hi, init: 1.0 });
                }
            }
            ScaleGenes::Matrix => {
                matrix_start = genes.len();
                for i in 0..m {
                    for j in 0..m {
                        let (mi, li) = locate(&layers, i);
                        let (mj, lj) = locate(&layers, j);
                        genes.push(DfsGene {
                            name: format!("scale.{}.L{li}>{}.L{lj}", labels[mi], labels[mj]),
                            lower: lo,
                            upper: hi,
                            init: 1.0,
                        });
                    }
                }
            }
        }
        Ok(DfsSpace {
            labels,
            layers,
            repeats: spec.repeats,
            scales: spec.scales,
            fixed_ends: spec.fixed_ends,
            max_hops: spec.max_hops,
            genes,
            indicator,
            slot_scale,
            matrix_start,
        })
    }

    /// M: layers in the pool.
    pub fn pool_len(&self) -> usize {
        self.layers.iter().sum()
    }

    /// T = M·r.
    pub fn slots(&self) -> usize {
        self.pool_len() * self.repeats
    }

    /// Which model (index) and which of its layers pool layer `p` is.
    pub fn locate(&self, p: usize) -> (usize, usize) {
        locate(&self.layers, p)
    }

    /// The path of vector `x`, or why it is infeasible (no hop, or more than `max_hops`). Scales are
    /// rounded to f32, as an `evomistral` checkpoint stores them, so the exported model computes
    /// exactly what was searched.
    pub fn path(&self, x: &[f64]) -> std::result::Result<LayerPath, String> {
        if x.len() != self.genes.len() {
            return Err(format!("the vector has {} values, the DFS genome {} genes", x.len(), self.genes.len()));
        }
        let m = self.pool_len();
        let first = self.layers[0];
        let on = |t: usize| self.indicator[t].is_some_and(|g| x[g] > 0.0);
        let mut slots: Vec<usize> = Vec::new();
        if self.fixed_ends {
            slots.push(0);
        }
        slots.extend((0..self.slots()).filter(|&t| on(t)));
        if self.fixed_ends && first > 1 {
            slots.push(first - 1);
        }
        if slots.is_empty() {
            return Err("infeasible: no slot is on the path".into());
        }
        if self.max_hops > 0 && slots.len() > self.max_hops {
            return Err(format!("infeasible: the path has {} hops, more than max_hops = {}", slots.len(), self.max_hops));
        }
        let f32_round = |v: f64| v as f32 as f64;
        let mut hops = Vec::with_capacity(slots.len());
        for (h, &t) in slots.iter().enumerate() {
            let layer = t % m;
            let scale = match self.scales {
                ScaleGenes::PerHop => self.slot_scale[t].map_or(1.0, |g| x[g]),
                ScaleGenes::Matrix if h == 0 => 1.0,
                ScaleGenes::Matrix => x[self.matrix_start + (slots[h - 1] % m) * m + layer],
            };
            hops.push(Hop { layer, scale: f32_round(scale) });
        }
        LayerPath::new(hops, ScaleConvention::ReleasedBranch).map_err(|e| e.to_string())
    }
}

impl SearchSpace for DfsSpace {
    fn dim(&self) -> usize {
        self.genes.len()
    }
    fn gene(&self, i: usize) -> (&str, f64, f64, f64) {
        let g = &self.genes[i];
        (&g.name, g.lower, g.upper, g.init)
    }
}

/// Model and layer of pool layer `p`.
fn locate(layers: &[usize], mut p: usize) -> (usize, usize) {
    for (k, &n) in layers.iter().enumerate() {
        if p < n {
            return (k, p);
        }
        p -= n;
    }
    (layers.len().saturating_sub(1), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scales: ScaleGenes, fixed_ends: bool) -> DfsSpec {
        DfsSpec {
            models: vec!["a/x".into(), "b/y".into()],
            repeats: 2,
            scales,
            fixed_ends,
            max_hops: 0,
            scale_bounds: [0.0, 2.0],
            dtype: None,
            max_trials: None,
            population: None,
        }
    }

    fn layers_of(p: &LayerPath) -> Vec<usize> {
        p.hops().iter().map(|h| h.layer).collect()
    }

    #[test]
    fn the_initial_point_is_the_first_model() {
        for fixed in [true, false] {
            let space = DfsSpace::new(&spec(ScaleGenes::PerHop, fixed), vec![4, 3], 1.0 / 6.0).unwrap();
            assert_eq!(space.slots(), 14);
            let path = space.path(&space.x0()).unwrap();
            assert_eq!(layers_of(&path), vec![0, 1, 2, 3]);
            assert!(path.hops().iter().all(|h| h.scale == 1.0));
            // Fixed ends have no indicator gene.
            let indicators = space.genes.iter().filter(|g| g.name.starts_with("in.")).count();
            assert_eq!(indicators, if fixed { 12 } else { 14 });
        }
    }

    #[test]
    fn slots_map_to_pool_layers_in_slot_order_with_their_scales() {
        let space = DfsSpace::new(&spec(ScaleGenes::PerHop, true), vec![4, 3], 0.2).unwrap();
        let mut x = vec![-0.5; space.genes.len()];
        let gene = |name: &str| space.genes.iter().position(|g| g.name == name).unwrap();
        // b's layer 1 in repetition 0 (pool 5), a's layer 2 in repetition 1 (slot 7 + 2 = 9).
        x[gene("in.y.L1.r0")] = 0.3;
        x[gene("in.x.L2.r1")] = 0.1;
        x[gene("scale.y.L1.r0")] = 0.75;
        x[gene("scale.x.L2.r1")] = 1.25;
        x[gene("scale.x.L3.r0")] = 0.5;
        let path = space.path(&x).unwrap();
        assert_eq!(layers_of(&path), vec![0, 5, 2, 3]);
        let scales: Vec<f64> = path.hops().iter().map(|h| h.scale).collect();
        assert_eq!(scales, vec![1.0, 0.75, 1.25, 0.5]);
        assert_eq!(path.convention(), ScaleConvention::ReleasedBranch);
    }

    #[test]
    fn matrix_scales_are_read_on_transitions() {
        let space = DfsSpace::new(&spec(ScaleGenes::Matrix, false), vec![2, 2], 0.2).unwrap();
        let n_ind = space.slots();
        assert_eq!(space.genes.len(), n_ind + 16);
        let mut x = vec![-1.0; n_ind];
        x.extend((0..16).map(|k| 0.5 + k as f64 / 100.0));
        // Slots 1 (pool 1), 2 (pool 2), 4 (pool 0, repetition 1).
        x[1] = 1.0;
        x[2] = 1.0;
        x[4] = 1.0;
        let path = space.path(&x).unwrap();
        assert_eq!(layers_of(&path), vec![1, 2, 0]);
        let w = |i: usize, j: usize| (0.5 + (i * 4 + j) as f64 / 100.0) as f32 as f64;
        let scales: Vec<f64> = path.hops().iter().map(|h| h.scale).collect();
        assert_eq!(scales, vec![1.0, w(1, 2), w(2, 0)]);
        assert_eq!(space.genes[n_ind + 6].name, "scale.x.L1>y.L0");
    }

    #[test]
    fn infeasible_paths_say_why() {
        let mut s = spec(ScaleGenes::PerHop, false);
        let space = DfsSpace::new(&s, vec![2, 2], 0.2).unwrap();
        let e = space.path(&vec![-1.0; space.genes.len()]).unwrap_err();
        assert!(e.contains("no slot"), "{e}");
        s.max_hops = 2;
        let space = DfsSpace::new(&s, vec![2, 2], 0.2).unwrap();
        let e = space.path(&vec![1.0; space.genes.len()]).unwrap_err();
        assert!(e.contains("8 hops") && e.contains("max_hops = 2"), "{e}");
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(ScaleGenes::PerHop, true);
        s.repeats = 0;
        assert!(s.validate().unwrap_err().to_string().contains("dfs.repeats"));
        let mut s = spec(ScaleGenes::PerHop, true);
        s.scale_bounds = [1.5, 2.0];
        assert!(s.validate().unwrap_err().to_string().contains("dfs.scale_bounds"));
        let mut s = spec(ScaleGenes::PerHop, true);
        s.models.push("a/x".into());
        assert!(s.validate().unwrap_err().to_string().contains("listed twice"));
    }
}
