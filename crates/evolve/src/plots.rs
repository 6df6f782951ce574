//! Placeholder replaced by the plotting module.
use std::path::Path;
pub struct TrialPoint { pub trial: u64, pub generation: u64, pub fitness: Option<f64> }
pub struct RecipeGrid { pub models: Vec<String>, pub groups: Vec<String>, pub parameters: Vec<(String, Vec<Vec<f64>>)>, pub bounds: Vec<(f64, f64)> }
pub fn fitness_svg(_p: &[TrialPoint], _m: &str, _path: &Path) -> Result<(), String> { Ok(()) }
pub fn recipe_svg(_g: &RecipeGrid, _path: &Path) -> Result<(), String> { Ok(()) }
