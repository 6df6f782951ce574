//! The live model of a search: one Mistral (or one LLaVA whose language model is merged) loaded
//! once, into whose existing weight storage every candidate's merged tensors are written. Nothing
//! is reloaded between candidates; a LLaVA's vision tower and projector are never touched.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use evomerge_merge::layout::Layout;
use evomerge_merge::MergedView;
use evomerge_mistral::generation::GenerationConfig;
use evomerge_mistral::prompt::TextTokenizer;
use evomerge_mistral::Mistral;
use evomerge_vision::LlavaModel;

use evomerge_eval::generator::Generator;

use crate::error::{EvolveError, Result};
use crate::generators::{FeatureCache, TextGenerator, VlmGenerator};

pub enum LiveModel {
    Text(Box<Mistral>),
    Vlm(Box<LlavaModel>),
}

pub struct Live {
    pub model: LiveModel,
    pub tokenizer: TextTokenizer,
    pub generation: GenerationConfig,
    pub dir: PathBuf,
    /// Layout of the merged tensors' names (the output model's).
    layout: Layout,
}

impl Live {
    /// Load the output model of the merge from `dir` (a LLaVA when `layout` is a VLM layout).
    pub fn load(dir: &Path, layout: Layout, device: &Device, dtype: DType) -> Result<Self> {
        let model_err = |what: &str, e: String| EvolveError::Model(format!("{what} {}: {e}", dir.display()));
        let model = if layout.is_vlm() {
            let opts = evomerge_vision::LoadOptions { device: device.clone(), dtype: Some(dtype), ..Default::default() };
            let m = LlavaModel::load(&dir.to_string_lossy(), &opts).map_err(|e| model_err("loading the LLaVA model in", e.to_string()))?;
            LiveModel::Vlm(Box::new(m))
        } else {
            let opts = evomerge_mistral::LoadOptions { device: device.clone(), dtype: Some(dtype), ..Default::default() };
            let m = Mistral::from_dir(dir, &opts).map_err(|e| model_err("loading the model in", e.to_string()))?;
            LiveModel::Text(Box::new(m))
        };
        Self::with_model(model, dir, layout)
    }

    /// A live text model already built (a data-flow search's layer pool), with the tokenizer and
    /// generation settings of `dir`.
    pub fn text(model: Mistral, dir: &Path) -> Result<Self> {
        Self::with_model(LiveModel::Text(Box::new(model)), dir, Layout::Plain)
    }

    fn with_model(model: LiveModel, dir: &Path, layout: Layout) -> Result<Self> {
        let model_err = |what: &str, e: String| EvolveError::Model(format!("{what} {}: {e}", dir.display()));
        let tokenizer =
            TextTokenizer::from_model_dir(dir).map_err(|e| model_err("loading the tokenizer in", e.to_string()))?;
        let generation = GenerationConfig::from_model_dir(dir)
            .map_err(|e| model_err("reading the generation config in", e.to_string()))?;
        Ok(Live { model, tokenizer, generation, dir: dir.to_path_buf(), layout })
    }

    pub fn llm(&self) -> &Mistral {
        match &self.model {
            LiveModel::Text(m) => m,
            LiveModel::Vlm(v) => v.llm(),
        }
    }

    pub fn llm_mut(&mut self) -> &mut Mistral {
        match &mut self.model {
            LiveModel::Text(m) => m,
            LiveModel::Vlm(v) => v.llm_mut(),
        }
    }

    pub fn is_vlm(&self) -> bool {
        matches!(self.model, LiveModel::Vlm(_))
    }

    /// A generator over the live model as it is now (image features come from `features`, which
    /// stays valid across candidates: the vision tower is never written).
    pub fn generator<'a>(&'a self, features: &'a mut FeatureCache) -> Box<dyn Generator + 'a> {
        let description = format!("live model of the search ({})", self.dir.display());
        match &self.model {
            LiveModel::Text(m) => Box::new(TextGenerator::new(m, &self.tokenizer, &self.generation, description)),
            LiveModel::Vlm(v) => Box::new(VlmGenerator::new(v, &self.tokenizer, &self.generation, features, description)),
        }
    }

    /// Write one merged tensor into the model's storage (output-layout name).
    pub fn write(&mut self, merged: MergedView<'_>) -> Result<()> {
        let name = &merged.tensor.name;
        let canonical = self.layout.canonical(name).ok_or_else(|| {
            EvolveError::Model(format!("merged tensor `{name}` is not part of the language model"))
        })?;
        self.llm_mut()
            .write_f32(&canonical, merged.values)
            .map_err(|e| EvolveError::Model(format!("writing `{name}` into the live model: {e}")))
    }
}

impl Live {
    /// Write one merged tensor held on the model's device (output-layout name) into the model's storage there.
    pub fn write_tensor(&mut self, name: &str, value: &candle_core::Tensor) -> Result<()> {
        let canonical = self.layout.canonical(name).ok_or_else(|| {
            EvolveError::Model(format!("merged tensor `{name}` is not part of the language model"))
        })?;
        self.llm_mut()
            .set_tensor(&canonical, value)
            .map_err(|e| EvolveError::Model(format!("writing `{name}` into the live model: {e}")))
    }
}

/// Parse `cpu`, `cuda`, `cuda:N` (the recipe's `device`).
pub fn parse_device(spec: &str) -> Result<Device> {
    crate::generators::parse_device(spec).map_err(|e| EvolveError::recipe("device", e.to_string()))
}

/// The candle dtype of a recipe dtype name.
pub fn candle_dtype(name: &str) -> Result<DType> {
    match crate::recipe::parse_dtype(name) {
        Some(evomerge_checkpoint::Dtype::F32) => Ok(DType::F32),
        Some(evomerge_checkpoint::Dtype::F16) => Ok(DType::F16),
        Some(evomerge_checkpoint::Dtype::BF16) => Ok(DType::BF16),
        _ => Err(EvolveError::recipe("genome.dtype", format!("`{name}` is not float32, float16 or bfloat16"))),
    }
}
