//! CMA-ES, the search behind evolutionary model merging: a derivative-free optimiser for
//! noisy, non-convex, black-box objectives of tens to hundreds of real (or thresholded)
//! genes. It knows nothing about models: it hands out candidate vectors and learns from
//! their fitness (lower is better; negate an accuracy).
//!
//! * ask/tell: [`CmaEs::ask`] returns a whole generation, [`CmaEs::tell`] takes its fitness
//!   in order, so candidates can be evaluated in batches, in parallel or on other machines;
//! * (μ/μ_w, λ)-CMA-ES with active weights, cumulative step-size adaptation, rank-one and
//!   rank-μ updates, defaults of Hansen's tutorial (population 4 + ⌊3 ln n⌋);
//! * box bounds (pycma's smooth periodic transform by default, or resample-then-clip as in the
//!   `cmaes` library; candidates are always inside), separable CMA-ES for
//!   high dimensions, CMA-ES with margin for discrete genes, IPOP restarts with pycma's
//!   stopping criteria;
//! * the whole state, random generator included, serializes to JSON after any `tell`;
//!   restoring it continues with bit-identical candidates. Results do not depend on the
//!   machine or thread count.
//!
//! ```
//! use evomerge_cmaes::{CmaEs, Config};
//!
//! let sphere = |x: &[f64]| x.iter().map(|v| (v - 0.3) * (v - 0.3)).sum::<f64>();
//! let config = Config::new(vec![0.5; 4], 1.0 / 6.0).with_bounds(vec![0.0; 4], vec![1.0; 4]);
//! let mut es = CmaEs::new(config)?;
//! while !es.is_stopped() && es.evaluations() < 3000 {
//!     let candidates = es.ask()?;
//!     let fitness: Vec<f64> = candidates.iter().map(|x| sphere(x)).collect();
//!     es.tell(&fitness)?;
//! }
//! assert!(es.best().unwrap().fitness < 1e-10);
//! # Ok::<(), evomerge_cmaes::Error>(())
//! ```

mod bounds;
mod config;
mod eigen;
mod error;
mod json_f64;
mod margin;
mod optimizer;
mod params;
mod rng;
mod run;
mod stop;

pub use bounds::BoundHandling;
pub use config::{Bounds, Config, Tolerances};
pub use error::Error;
pub use optimizer::{Best, CmaEs, RestartRecord};
pub use stop::StopReason;
