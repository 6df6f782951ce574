//! The parameter-space genome: which number of the optimiser's vector is which merge parameter of
//! which model and layer group, and how a vector becomes a plain mergekit recipe
//! ([`MergeConfig`]) that both the in-memory merger and `evomerge merge` run.

use std::collections::BTreeMap;

use evomerge_merge::params::{Parameters, Scalar, Setting, Value as ParamValueSpec};
use evomerge_merge::{InputModel, InputSlice, MergeConfig, OutputSlice};

use crate::error::{EvolveError, Result};
use crate::recipe::EvolveRecipe;

/// One gene.
#[derive(Debug, Clone, PartialEq)]
pub struct Gene {
    /// `shisa-gamma-7b-v1.density`, or with a layer group `shisa-gamma-7b-v1.density[0:8]`;
    /// shared parameters have no model part (`t`, `t[0:8]`).
    pub name: String,
    pub parameter: String,
    /// Index into the genome's models; `None` for shared parameters.
    pub model: Option<usize>,
    /// Index into [`GenomeSpace::groups`]; `None` when the genome has one set for all layers.
    pub group: Option<usize>,
    pub lower: f64,
    pub upper: f64,
    pub init: f64,
}

/// The genes of a search space, in vector order: what CMA-ES needs (start, bounds) and what the
/// journal records (names).
pub trait SearchSpace {
    fn dim(&self) -> usize;
    /// Gene `i`: (name, lower, upper, init).
    fn gene(&self, i: usize) -> (&str, f64, f64, f64);

    fn names(&self) -> Vec<String> {
        (0..self.dim()).map(|i| self.gene(i).0.to_string()).collect()
    }
    fn x0(&self) -> Vec<f64> {
        (0..self.dim()).map(|i| self.gene(i).3).collect()
    }
    fn lower(&self) -> Vec<f64> {
        (0..self.dim()).map(|i| self.gene(i).1).collect()
    }
    fn upper(&self) -> Vec<f64> {
        (0..self.dim()).map(|i| self.gene(i).2).collect()
    }
    /// Gene name → value.
    fn params(&self, x: &[f64]) -> BTreeMap<String, f64> {
        (0..self.dim()).zip(x).map(|(i, v)| (self.gene(i).0.to_string(), *v)).collect()
    }
}

impl SearchSpace for GenomeSpace {
    fn dim(&self) -> usize {
        self.genes.len()
    }
    fn gene(&self, i: usize) -> (&str, f64, f64, f64) {
        let g = &self.genes[i];
        (&g.name, g.lower, g.upper, g.init)
    }
}

/// Everything needed to turn optimiser vectors into merge recipes.
#[derive(Debug, Clone)]
pub struct GenomeSpace {
    pub merge_method: String,
    /// Model references as the exported recipe writes them (local directories made absolute).
    pub models: Vec<String>,
    /// Short names for parameter names and plots (last path component, made unique).
    pub labels: Vec<String>,
    pub base_model: Option<String>,
    /// Layer groups `[start, end)`; empty when `layer_granularity` is 0.
    pub groups: Vec<[usize; 2]>,
    pub genes: Vec<Gene>,
    pub fixed: Parameters,
    pub dtype: String,
    pub num_layers: usize,
}

impl GenomeSpace {
    /// The genome of `recipe` over models with `num_layers` layers.
    pub fn new(recipe: &EvolveRecipe, num_layers: usize) -> Result<Self> {
        let g = recipe.ps_genome()?;
        let k = g.layer_granularity;
        let groups: Vec<[usize; 2]> = if k == 0 {
            Vec::new()
        } else {
            if num_layers % k != 0 || k > num_layers {
                return Err(EvolveError::recipe(
                    "genome.layer_granularity",
                    format!("{k} does not divide the models' {num_layers} layers"),
                ));
            }
            (0..num_layers / k).map(|i| [i * k, (i + 1) * k]).collect()
        };
        let models: Vec<String> = g.models.iter().map(|m| recipe.resolve_model(m)).collect();
        let labels = unique_labels(&g.models);
        let mut genes = Vec::new();
        let group_ids: Vec<Option<usize>> = if groups.is_empty() { vec![None] } else { (0..groups.len()).map(Some).collect() };
        for parameter in &g.parameters {
            let range = recipe.gene_range(parameter)?;
            let owners: Vec<Option<usize>> =
                if recipe.is_shared(parameter) { vec![None] } else { (0..models.len()).map(Some).collect() };
            for &model in &owners {
                for &group in &group_ids {
                    let mut name = match model {
                        Some(m) => format!("{}.{parameter}", labels[m]),
                        None => parameter.clone(),
                    };
                    if let Some(gi) = group {
                        let [a, b] = groups[gi];
                        name.push_str(&format!("[{a}:{b}]"));
                    }
                    genes.push(Gene {
                        name,
                        parameter: parameter.clone(),
                        model,
                        group,
                        lower: range.lower,
                        upper: range.upper,
                        init: range.init,
                    });
                }
            }
        }
        let fixed: Parameters = g
            .fixed
            .iter()
            .map(|(k, v)| (k.clone(), Setting::Value(ParamValueSpec::Scalar(v.clone()))))
            .collect();
        Ok(GenomeSpace {
            merge_method: g.merge_method.clone(),
            models,
            labels,
            base_model: g.base_model.as_ref().map(|b| recipe.resolve_model(b)),
            groups,
            genes,
            fixed,
            dtype: g.dtype.clone(),
            num_layers,
        })
    }

    /// The merge recipe of vector `x`: `models:` with per-model parameters when the genome has one
    /// set for all layers, else one `slices:` entry per layer group.
    pub fn to_merge_config(&self, x: &[f64]) -> Result<MergeConfig> {
        if x.len() != self.genes.len() {
            return Err(EvolveError::Fitness(format!("genome has {} genes, got a vector of {}", self.genes.len(), x.len())));
        }
        let value = |model: Option<usize>, group: Option<usize>| -> Option<Parameters> {
            let p: Parameters = self
                .genes
                .iter()
                .zip(x)
                .filter(|(g, _)| g.model == model && g.group == group)
                .map(|(g, v)| (g.parameter.clone(), Setting::Value(ParamValueSpec::Scalar(Scalar::Number(*v)))))
                .collect();
            (!p.is_empty()).then_some(p)
        };
        let mut top = self.fixed.clone();
        let mut config = MergeConfig {
            models: None,
            slices: None,
            modules: None,
            merge_method: self.merge_method.clone(),
            base_model: self.base_model.clone(),
            parameters: None,
            dtype: Some(self.dtype.clone()),
            out_dtype: None,
            tokenizer_source: None,
            tokenizer: None,
            chat_template: None,
            recipe_dir: None,
        };
        if self.groups.is_empty() {
            if let Some(shared) = value(None, None) {
                top.extend(shared);
            }
            let mut models: Vec<InputModel> = self
                .models
                .iter()
                .enumerate()
                .map(|(i, m)| InputModel { model: m.clone(), parameters: value(Some(i), None) })
                .collect();
            if let Some(base) = &self.base_model {
                models.push(InputModel { model: base.clone(), parameters: None });
            }
            config.models = Some(models);
        } else {
            let slices = self
                .groups
                .iter()
                .enumerate()
                .map(|(gi, range)| {
                    let mut sources: Vec<InputSlice> = self
                        .models
                        .iter()
                        .enumerate()
                        .map(|(i, m)| InputSlice { model: m.clone(), layer_range: *range, parameters: value(Some(i), Some(gi)) })
                        .collect();
                    if let Some(base) = &self.base_model {
                        sources.push(InputSlice { model: base.clone(), layer_range: *range, parameters: None });
                    }
                    OutputSlice { sources, base_model: None, residual_weight: None, parameters: value(None, Some(gi)) }
                })
                .collect();
            config.slices = Some(slices);
        }
        config.parameters = (!top.is_empty()).then_some(top);
        config.validate()?;
        Ok(config)
    }

    /// Values of `x` per parameter as rows (models, or the parameter itself when shared) × layer
    /// groups, for the recipe heat map.
    pub fn grid(&self, x: &[f64]) -> Vec<ParameterGrid> {
        let group_names: Vec<String> = if self.groups.is_empty() {
            vec!["all layers".into()]
        } else {
            self.groups.iter().map(|[a, b]| format!("{a}-{}", b - 1)).collect()
        };
        let mut out = Vec::new();
        let mut parameters: Vec<&str> = Vec::new();
        for g in &self.genes {
            if !parameters.contains(&g.parameter.as_str()) {
                parameters.push(&g.parameter);
            }
        }
        for p in parameters {
            let genes: Vec<(&Gene, f64)> = self.genes.iter().zip(x).filter(|(g, _)| g.parameter == p).map(|(g, v)| (g, *v)).collect();
            let shared = genes.iter().all(|(g, _)| g.model.is_none());
            let rows: Vec<String> = if shared { vec![p.to_string()] } else { self.labels.clone() };
            let mut values = vec![vec![f64::NAN; group_names.len()]; rows.len()];
            for (g, v) in genes {
                values[g.model.unwrap_or(0)][g.group.unwrap_or(0)] = v;
            }
            out.push(ParameterGrid { parameter: p.to_string(), rows, groups: group_names.clone(), values });
        }
        out
    }
}

/// One parameter's values of a genome: `values[row][group]` (NaN where a row has no gene).
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterGrid {
    pub parameter: String,
    pub rows: Vec<String>,
    pub groups: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

/// Last path component of each reference, made unique with an index where two coincide.
pub(crate) fn unique_labels(refs: &[String]) -> Vec<String> {
    let short: Vec<String> = refs
        .iter()
        .map(|r| r.trim_end_matches('/').rsplit('/').next().unwrap_or(r).to_string())
        .collect();
    short
        .iter()
        .enumerate()
        .map(|(i, s)| if short.iter().filter(|t| *t == s).count() > 1 { format!("{i}-{s}") } else { s.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(extra: &str) -> EvolveRecipe {
        EvolveRecipe::from_yaml(&format!(
            "genome:\n  merge_method: dare_ties\n  base_model: org/base\n  models: [org/a, other/a-b]\n  parameters: [density, weight]\n{extra}task:\n  kind: gsm8k-ja\n  metric: accuracy\n"
        ))
        .unwrap()
    }

    #[test]
    fn one_gene_set_per_model() {
        let space = GenomeSpace::new(&recipe(""), 4).unwrap();
        let names: Vec<&str> = space.genes.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["a.density", "a-b.density", "a.weight", "a-b.weight"]);
        let config = space.to_merge_config(&[0.1, 0.2, 0.3, 0.4]).unwrap();
        let yaml = config.to_yaml().unwrap();
        let back = MergeConfig::from_yaml(&yaml).unwrap();
        assert_eq!(back, config);
        let models = config.models.unwrap();
        assert_eq!(models.len(), 3);
        assert_eq!(models[2].model, "org/base");
        assert!(models[2].parameters.is_none());
    }

    #[test]
    fn layer_groups_become_slices() {
        let space = GenomeSpace::new(&recipe("  layer_granularity: 2\n  fixed: {normalize: true}\n"), 4).unwrap();
        assert_eq!(space.dim(), 8);
        assert_eq!(space.genes[1].name, "a.density[2:4]");
        let config = space.to_merge_config(&[0.5; 8]).unwrap();
        let slices = config.slices.as_ref().unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[1].sources[2].layer_range, [2, 4]);
        assert!(config.parameters.as_ref().unwrap().contains_key("normalize"));
    }

    #[test]
    fn granularity_must_divide_the_layers() {
        let e = GenomeSpace::new(&recipe("  layer_granularity: 3\n"), 4).unwrap_err().to_string();
        assert!(e.contains("genome.layer_granularity"), "{e}");
    }
}
