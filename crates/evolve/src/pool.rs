//! The data-flow-space phase: the layers of every model of `dfs.models` resident once, as one pool
//! model (the first model's embeddings, final norm and head). A candidate is a [`LayerPath`] set on
//! that model — no reload and no copy of a layer's weights — and scored with one KV cache per hop.
//! The best path is exported as an `evomistral` directory holding only the layers it uses.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use evomerge_mistral::{evomistral, LayerPath, Mistral};
use serde::Serialize;

use crate::dfs::DfsSpace;
use crate::error::{EvolveError, Result};
use crate::export;
use crate::fitness::{score_live, Scorer, Task};
use crate::generators::FeatureCache;
use crate::genome::SearchSpace;
use crate::journal::{PhaseKind, TrialOutcome, TrialRecord};
use crate::live::Live;
use crate::phase::Phase;
use crate::plots::{self, PathHop};
use crate::recipe::Metric;

/// The DFS phase of a search.
pub struct DfsPhase<'a> {
    space: DfsSpace,
    live: Live,
    task: &'a Task,
    metric: Metric,
    scorer: Option<&'a Scorer>,
    features: FeatureCache,
    /// The pool's models, as `best/path.json` names them.
    models: Vec<String>,
}

/// `best/path.json`: the exported path in pool terms (the `evomistral` tensors hold it renumbered).
#[derive(Debug, Serialize)]
struct PathFile<'a> {
    models: &'a [String],
    pool_layers: usize,
    hops: Vec<PathFileHop>,
}

#[derive(Debug, Serialize)]
struct PathFileHop {
    pool_layer: usize,
    model: usize,
    model_layer: usize,
    scale: f64,
}

impl<'a> DfsPhase<'a> {
    /// Load the pool from the model directories `dirs` (in `dfs.models` order).
    pub fn load(
        space: DfsSpace,
        dirs: &[PathBuf],
        device: &Device,
        dtype: DType,
        task: &'a Task,
        metric: Metric,
        scorer: Option<&'a Scorer>,
    ) -> Result<Self> {
        let opts = evomerge_mistral::LoadOptions { device: device.clone(), dtype: Some(dtype), ..Default::default() };
        let mut models = Vec::with_capacity(dirs.len());
        for dir in dirs {
            tracing::info!("loading {} into the layer pool", dir.display());
            let m = Mistral::from_dir(dir, &opts)
                .map_err(|e| EvolveError::Model(format!("loading {} into the layer pool: {e}", dir.display())))?;
            models.push(m);
        }
        let mut models = models.into_iter();
        let first = models.next().ok_or_else(|| EvolveError::recipe("dfs.models", "list at least one model"))?;
        let others: Vec<Mistral> = models.collect();
        let pool = first
            .with_pool(&others.iter().collect::<Vec<_>>())
            .map_err(|e| EvolveError::Model(format!("building the layer pool: {e}")))?;
        drop(others);
        if pool.pool_len() != space.pool_len() {
            return Err(EvolveError::Model(format!(
                "the pool has {} layers, the genome was made for {}",
                pool.pool_len(),
                space.pool_len()
            )));
        }
        let live = Live::text(pool, &dirs[0])?;
        let models = dirs.iter().map(|d| d.display().to_string()).collect();
        Ok(DfsPhase { space, live, task, metric, scorer, features: FeatureCache::new(), models })
    }

    fn set_path(&mut self, x: &[f64]) -> Result<LayerPath> {
        let path = self.space.path(x).map_err(EvolveError::Fitness)?;
        self.live
            .llm_mut()
            .set_path(path.clone())
            .map_err(|e| EvolveError::Model(format!("setting the layer path: {e}")))?;
        Ok(path)
    }

    fn path_hops(&self, path: &LayerPath) -> Vec<PathHop> {
        path.hops()
            .iter()
            .map(|h| PathHop { pool_layer: h.layer, model: self.space.locate(h.layer).0, scale: h.scale })
            .collect()
    }
}

impl Phase for DfsPhase<'_> {
    fn kind(&self) -> PhaseKind {
        PhaseKind::Dfs
    }
    fn space(&self) -> &dyn SearchSpace {
        &self.space
    }
    fn describe(&self, x: &[f64]) -> Option<String> {
        self.space.path(x).ok().map(|p| p.to_string())
    }

    fn set_candidate(&mut self, x: &[f64]) -> Result<f64> {
        let started = Instant::now();
        self.set_path(x)?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn score_items(&mut self, items: Option<&[usize]>) -> Result<TrialOutcome> {
        match items {
            None => score_live(&self.live, self.metric, self.task, self.scorer, &mut self.features),
            Some(ids) => score_live(&self.live, self.metric, &self.task.select(ids)?, self.scorer, &mut self.features),
        }
    }

    fn export_best(&mut self, out: &Path, record: &TrialRecord) -> Result<()> {
        let path = self.set_path(&record.genome)?;
        let tmp = export::best_tmp_dir(out);
        evomistral::save(self.live.llm(), &tmp, Some(&self.live.dir))
            .map_err(|e| EvolveError::Model(format!("writing the evomistral model into {}: {e}", tmp.display())))?;
        let file = PathFile {
            models: &self.models,
            pool_layers: self.space.pool_len(),
            hops: path
                .hops()
                .iter()
                .map(|h| {
                    let (model, model_layer) = self.space.locate(h.layer);
                    PathFileHop { pool_layer: h.layer, model, model_layer, scale: h.scale }
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        export::install_best(out, &tmp, record, 0, &[("path.json", json)])?;
        let svg = export::plots_dir(out)?.join("path.svg");
        plots::path_svg(&self.path_hops(&path), &self.space.labels, self.space.pool_len(), &svg)
            .map_err(|e| EvolveError::Plot(e.to_string()))
    }
}
