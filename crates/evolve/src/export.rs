//! What a search leaves in its directory: the journal, `best/` (a complete model directory with a
//! plain mergekit `recipe.yml` that reproduces it and `genome.json`), `trials.csv` and the plots.
//! Every file is replaced atomically; `best/` is swapped in whole, so a reader (or a crash) never
//! sees half of one.

use std::path::Path;

use evomerge_merge::{write_plan, InMemoryMerger, MergeOptions};
use serde::{Deserialize, Serialize};

use crate::error::{EvolveError, Result};
use crate::genome::GenomeSpace;
use crate::journal::{Journal, Location, TrialRecord};
use crate::plots::{self, RecipeGrid, TrialPoint};
use crate::recipe::EvolveRecipe;

pub const JOURNAL_FILE: &str = "journal.sqlite";
pub const BEST_DIR: &str = "best";
/// In an output directory whose journal is on a PostgreSQL server: that server's URL (no password).
pub const JOURNAL_URL_FILE: &str = "journal.url";

/// `best/genome.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestGenome {
    pub trial: u64,
    pub generation: u64,
    pub fitness: f64,
    /// The seed `evomerge merge best/recipe.yml --seed SEED` needs to rebuild `best/` bit for bit
    /// (it keys the DARE masks).
    pub merge_seed: u64,
    pub params: std::collections::BTreeMap<String, f64>,
    pub genome: Vec<f64>,
}

/// Create the output directory (or find the one a previous run left), open its journal (the
/// directory's SQLite file, or `journal` when given) and bind it to the recipe: a journal holding
/// another recipe is refused.
pub fn prepare_out_dir(out: &Path, recipe: &EvolveRecipe, journal: Option<&Location>) -> Result<Journal> {
    if out.exists() && !out.is_dir() {
        return Err(EvolveError::OutputDir(format!("{} exists and is not a directory", out.display())));
    }
    let journal_path = out.join(JOURNAL_FILE);
    let marker = out.join(JOURNAL_URL_FILE);
    if out.is_dir()
        && !journal_path.exists()
        && !marker.exists()
        && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(false)
    {
        return Err(EvolveError::OutputDir(format!(
            "{} is not empty and holds no search journal; choose a new --out directory",
            out.display()
        )));
    }
    let location = journal.cloned().unwrap_or_else(|| Location::Sqlite(journal_path.clone()));
    let create = || std::fs::create_dir_all(out).map_err(|e| EvolveError::io(format!("creating {}", out.display()), e));
    // A server is reached before anything is created: one that does not answer leaves nothing behind.
    let mut journal = match &location {
        Location::Sqlite(_) => {
            create()?;
            Journal::connect(&location)?
        }
        Location::Postgres(_) => {
            let journal = Journal::connect(&location)?;
            create()?;
            journal
        }
    };
    if let Location::Postgres(_) = location {
        // The directory says where its journal is (password left out).
        write_atomic(&marker, format!("{}\n", location.display()).as_bytes())?;
    }
    let yaml = serde_norway::to_string(recipe).map_err(|e| EvolveError::recipe("(recipe)", e.to_string()))?;
    journal.bind_recipe(&recipe.identity()?, &yaml)?;
    repair_best_swap(out)?;
    Ok(journal)
}

/// A crash between the two renames of [`swap_in`] leaves `best` missing and `.best.old` present.
fn repair_best_swap(out: &Path) -> Result<()> {
    let best = out.join(BEST_DIR);
    let old = out.join(".best.old");
    if !best.exists() && old.exists() {
        std::fs::rename(&old, &best).map_err(|e| EvolveError::io(format!("restoring {}", best.display()), e))?;
    } else if old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    // Temporary exports of a killed run.
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".best.tmp") || name.starts_with(".ps-best.tmp") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// Write trial `record`'s merge as `out/best/`.
pub fn export_best(out: &Path, space: &GenomeSpace, record: &TrialRecord, merger: &mut InMemoryMerger<'_>, seed: u64) -> Result<()> {
    let fitness = record.fitness.ok_or_else(|| EvolveError::Fitness(format!("trial {} has no fitness", record.trial)))?;
    let config = space.to_merge_config(&record.genome)?;
    merger.set_config(&config)?;
    merger.set_seed(seed);
    let yaml = config.to_yaml()?;
    let tmp = best_tmp_dir(out);
    let options = MergeOptions { seed, force: true, progress: false, ..Default::default() };
    write_plan(merger.plan(), merger.sources(), &tmp, &options)?;
    let header = format!(
        "# Trial {} of an `evomerge evolve` search, fitness {fitness}.\n\
         # Rebuild this directory bit for bit with: evomerge merge recipe.yml --out DIR --seed {seed}\n",
        record.trial
    );
    install_best(out, &tmp, record, seed, &[("recipe.yml", format!("{header}{yaml}").into_bytes())])?;
    write_recipe_plot(out, space, record)
}

/// Finish an export: write `genome.json` and `extra` files into the model directory `tmp`, then
/// swap it in as `out/best/` (removing `tmp` on failure).
pub fn install_best(out: &Path, tmp: &Path, record: &TrialRecord, merge_seed: u64, extra: &[(&str, Vec<u8>)]) -> Result<()> {
    let result = (|| {
        let fitness = record.fitness.ok_or_else(|| EvolveError::Fitness(format!("trial {} has no fitness", record.trial)))?;
        for (name, bytes) in extra {
            write_atomic(&tmp.join(name), bytes)?;
        }
        let genome = BestGenome {
            trial: record.trial,
            generation: record.generation,
            fitness,
            merge_seed,
            params: record.params.clone(),
            genome: record.genome.clone(),
        };
        let json = serde_json::to_vec_pretty(&genome).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        write_atomic(&tmp.join("genome.json"), &json)?;
        swap_in(tmp, &out.join(BEST_DIR))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    result
}

/// The temporary directory an export is built in (removed by [`prepare_out_dir`] if a run is killed).
pub fn best_tmp_dir(out: &Path) -> std::path::PathBuf {
    out.join(format!(".best.tmp{}", std::process::id()))
}

/// `best/genome.json`, if there is a complete `best/`.
pub fn read_best(out: &Path) -> Option<BestGenome> {
    let text = std::fs::read_to_string(out.join(BEST_DIR).join("genome.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Replace directory `target` by `new` (two renames; see [`repair_best_swap`] for the gap).
fn swap_in(new: &Path, target: &Path) -> Result<()> {
    let old = target.with_file_name(".best.old");
    if target.exists() {
        std::fs::rename(target, &old).map_err(|e| EvolveError::io(format!("moving {} aside", target.display()), e))?;
    }
    std::fs::rename(new, target).map_err(|e| EvolveError::io(format!("moving {} into place", target.display()), e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| EvolveError::io(format!("removing {}", old.display()), e))?;
    }
    Ok(())
}

/// `trials.csv` and `plots/fitness.svg`.
pub fn write_reports(out: &Path, journal: &Journal, metric: &str) -> Result<()> {
    let records = journal.trials()?;
    let mut csv = Vec::new();
    crate::trials::write_csv(&records, &mut csv).map_err(|e| EvolveError::io("formatting trials.csv", e))?;
    write_atomic(&out.join("trials.csv"), &csv)?;
    let points: Vec<TrialPoint> = records
        .iter()
        .filter(|r| r.status.is_finished())
        .map(|r| TrialPoint { trial: r.trial, generation: r.generation, fitness: r.fitness })
        .collect();
    if !points.is_empty() {
        plots::fitness_svg(&points, metric, &plots_dir(out)?.join("fitness.svg")).map_err(|e| EvolveError::Plot(e.to_string()))?;
    }
    Ok(())
}

/// `out/plots/`, created if needed.
pub fn plots_dir(out: &Path) -> Result<std::path::PathBuf> {
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| EvolveError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// `plots/recipe.svg`: the parameter-space best's genes per model and layer group.
fn write_recipe_plot(out: &Path, space: &GenomeSpace, best: &TrialRecord) -> Result<()> {
    let mut recipe_grid = RecipeGrid { models: Vec::new(), groups: Vec::new(), parameters: Vec::new(), bounds: Vec::new() };
    for crate::genome::ParameterGrid { parameter: name, rows, groups, values } in space.grid(&best.genome) {
        if recipe_grid.models.len() < rows.len() {
            recipe_grid.models = rows.clone();
        }
        recipe_grid.groups = groups;
        let gene = space.genes.iter().find(|g| g.parameter == name);
        recipe_grid.bounds.push(gene.map_or((0.0, 1.0), |g| (g.lower, g.upper)));
        recipe_grid.parameters.push((name, values));
    }
    plots::recipe_svg(&recipe_grid, &plots_dir(out)?.join("recipe.svg")).map_err(|e| EvolveError::Plot(e.to_string()))
}

/// Write `bytes` to `path` through a temporary file and a rename (the eval crate's writer).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    evomerge_eval::runner::write_atomic(path, bytes).map_err(|e| EvolveError::Io {
        context: format!("writing {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })
}
