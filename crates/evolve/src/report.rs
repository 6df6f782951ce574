//! The final evaluation of a search: the best model and every source model scored on the test
//! tasks (the recipe's `final_eval`, else the paper's test sets for its task kind), written to
//! `DIR/summary.json` and `DIR/report.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use evomerge_checkpoint::Checkpoint;
use evomerge_merge::layout::Layout;
use serde::Serialize;

use crate::error::{EvolveError, Result};
use crate::export::{read_best, write_atomic, BEST_DIR};
use crate::fitness::{Scorer, Task};
use crate::generators::FeatureCache;
use crate::live::{candle_dtype, parse_device, Live};
use crate::recipe::{EvolveRecipe, Metric, TaskSpec};

/// One model's score on one test task.
#[derive(Debug, Clone, Serialize)]
pub struct ModelScore {
    pub model: String,
    pub path: String,
    pub score: f64,
    pub generated_tokens: u64,
    pub truncated: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub kind: String,
    pub metric: String,
    pub items: usize,
    pub data_files: Vec<String>,
    pub max_new_tokens: usize,
    pub num_beams: usize,
    pub scores: Vec<ModelScore>,
}

/// `DIR/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub best_trial: u64,
    pub best_search_fitness: f64,
    pub search_metric: String,
    pub tasks: Vec<TaskReport>,
}

/// Score `out/best` and the recipe's source models on the final tasks; write the report files.
pub fn final_eval(recipe: &EvolveRecipe, out: &Path) -> Result<Summary> {
    let best = read_best(out).ok_or_else(|| {
        EvolveError::OutputDir(format!("{} has no finished best/ to evaluate; run the search first", out.display()))
    })?;
    let tasks = recipe.final_eval_tasks();
    if tasks.is_empty() {
        return Err(EvolveError::recipe(
            "final_eval",
            "a custom task has no default test set; list the test tasks under `final_eval:` in the recipe",
        ));
    }
    let mut models: Vec<(String, PathBuf)> = vec![("evolved".into(), out.join(BEST_DIR))];
    let mut sources: Vec<&String> = recipe.genome.iter().flat_map(|g| &g.models).collect();
    for m in recipe.dfs.iter().flat_map(|d| &d.models) {
        if !crate::dfs::DfsSpec::is_ps(m) && !sources.contains(&m) {
            sources.push(m);
        }
    }
    for m in sources {
        let resolved = recipe.resolve_model(m);
        let ckpt = Checkpoint::open(&resolved).map_err(|e| EvolveError::Model(format!("opening {m}: {e}")))?;
        let label = m.trim_end_matches('/').rsplit('/').next().unwrap_or(m).to_string();
        models.push((label, ckpt.dir().to_path_buf()));
    }
    let device = parse_device(&recipe.device)?;
    let dtype = candle_dtype(match &recipe.genome {
        Some(g) => &g.dtype,
        None => recipe.dfs_dtype(),
    })?;
    // Load every task first, so a missing data set fails before any model runs.
    let loaded: Vec<(TaskSpec, Task, Option<Scorer>)> = tasks
        .into_iter()
        .map(|spec| {
            let mut r = recipe.clone();
            r.task = spec.clone();
            let task = Task::load(&r)?;
            let scorer = if spec.metric.generates() { Some(Scorer::new(spec.metric)?) } else { None };
            Ok((spec, task, scorer))
        })
        .collect::<Result<_>>()?;
    let mut reports = Vec::new();
    for (spec, task, scorer) in &loaded {
        let mut scores = Vec::new();
        for (label, dir) in &models {
            let started = Instant::now();
            let Some(outcome) = score_model_dir(dir, spec.metric, task, scorer.as_ref(), &device, dtype)? else {
                // A text-only source cannot answer about images; its score is not defined.
                continue;
            };
            scores.push(ModelScore {
                model: label.clone(),
                path: dir.display().to_string(),
                score: outcome.fitness,
                generated_tokens: outcome.generated_tokens,
                truncated: outcome.truncated,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        reports.push(TaskReport {
            kind: serde_json::to_value(spec.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            metric: spec.metric.name().into(),
            items: task.items.len(),
            data_files: task.files.iter().map(|f| f.display().to_string()).collect(),
            max_new_tokens: spec.generation.max_new_tokens,
            num_beams: spec.generation.num_beams,
            scores,
        });
    }
    let summary = Summary {
        best_trial: best.trial,
        best_search_fitness: best.fitness,
        search_metric: recipe.task.metric.name().into(),
        tasks: reports,
    };
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| EvolveError::Fitness(e.to_string()))?;
    write_atomic(&out.join("summary.json"), &json)?;
    write_atomic(&out.join("report.md"), markdown(&summary).as_bytes())?;
    Ok(summary)
}

/// Score the model in `dir` on `task` (`None`: the task has images and the model is text-only).
pub fn score_model_dir(
    dir: &Path,
    metric: Metric,
    task: &Task,
    scorer: Option<&Scorer>,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<Option<crate::journal::TrialOutcome>> {
    let ckpt = Checkpoint::open_dir(dir)?;
    let names: Vec<String> = ckpt.tensor_names().into_iter().map(str::to_string).collect();
    let layout = Layout::detect(Some(ckpt.config()), &names);
    if task.needs_images() && !layout.is_vlm() {
        return Ok(None);
    }
    let live = Live::load(dir, layout, device, dtype)?;
    let mut features = FeatureCache::new();
    Ok(Some(crate::fitness::score_live(&live, metric, task, scorer, &mut features)?))
}

fn markdown(s: &Summary) -> String {
    let mut md = format!(
        "# Final evaluation\n\nBest trial {} (search fitness {:.6}, {}).\n",
        s.best_trial, s.best_search_fitness, s.search_metric
    );
    for t in &s.tasks {
        md.push_str(&format!(
            "\n## {} ({}, {} items, max_new_tokens {}, beams {})\n\n| model | score | generated tokens | answers cut at max_new_tokens | seconds |\n|---|---|---|---|---|\n",
            t.kind, t.metric, t.items, t.max_new_tokens, t.num_beams
        ));
        for m in &t.scores {
            md.push_str(&format!(
                "| {} | {:.4} | {} | {} | {:.1} |\n",
                m.model, m.score, m.generated_tokens, m.truncated, m.seconds
            ));
        }
        if t.scores.is_empty() {
            md.push_str("\n(no model could be scored)\n");
        }
    }
    md
}
