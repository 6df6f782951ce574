//! Evolutionary search over merge recipes (the paper's parameter-space search): a recipe names the
//! sources, which merge parameters are genes, the task that scores a candidate and the optimiser.
//! Each candidate is merged in memory into one live model through the merge crate's single
//! tensor-level function, scored by the eval crate, and recorded in a trial journal (SQLite on one machine,
//! PostgreSQL across machines, where `evomerge worker` processes evaluate queued candidates) from
//! which an interrupted search resumes exactly. A trial may answer fewer search items than all
//! (`task.budget`: a subset, a race against the incumbent, IRT anchors; [`budget`]), in which case
//! each phase ends by re-scoring its best candidates on every item. The best candidate is exported as
//! a model directory with a plain mergekit recipe that reproduces it.
//!
//! This is the only crate that knows all the others.

pub mod budget;
pub mod error;
pub mod generators;
pub mod device_merge;
pub mod dfs;
pub mod export;
pub mod fitness;
pub mod genome;
pub mod journal;
pub mod live;
pub mod plots;
pub mod recipe;
pub mod report;
pub mod phase;
pub mod pool;
pub mod search;
pub mod trials;
pub mod work;
pub mod worker;

pub use error::EvolveError;
pub use genome::{Gene, GenomeSpace, SearchSpace};
pub use journal::{Journal, TrialOutcome, TrialRecord, TrialStatus};
pub use recipe::EvolveRecipe;
pub use search::{run, SearchOptions, SearchReport};
pub use worker::{run_worker, WorkerOptions, WorkerReport};
