//! Data-flow-space layer paths: which layers of a [layer pool](crate::Mistral::with_pool) run, in which
//! order, and how much each hop scales what flows into it.
//!
//! Two scale conventions are supported, because the paper and the released models differ:
//!
//! - [`ScaleConvention::ReleasedBranch`] — `evomistral` as released (SakanaAI's vLLM fork). vLLM fuses the
//!   residual add into the next RMSNorm: a layer returns its MLP output `m` and the residual stream `h`
//!   separately, and the next layer first computes `h + input`. The fork multiplies the *returned hidden
//!   states* by the hop's scale before that add. Unfused, with `h_t = x_t + attn_t(norm(x_t))` and
//!   `m_t = mlp_t(norm(h_t))`, this is:
//!   - hop 0: `x_0 = s_0 · embeddings`
//!   - hop t > 0: `x_t = h_{t-1} + s_t · m_{t-1}` (only the previous layer's MLP branch is scaled; its
//!     attention branch and everything earlier in the residual stream are not)
//!   - after the last hop: `final_norm(h_last + m_last)` (unscaled).
//!
//!   With all scales 1 this is exactly the ordinary forward pass.
//! - [`ScaleConvention::PaperStream`] — the paper's description: the whole hidden state passed from layer i
//!   to layer j is multiplied by `W[i][j]`: `x_t = s_t · (h_{t-1} + m_{t-1})`, hop 0 takes the embeddings
//!   times `s_0` (1 for paths built by [`LayerPath::from_paper`]).
//!
//! The released vLLM fork reads hop t's scale as `input_scales[input_layers[t]]` (indexed by the layer, not
//! the hop); [`ScaleLookup`] chooses between that and the per-hop reading when building a path from an
//! `evomistral` checkpoint.

use crate::error::{MistralError, Result};

/// One step of a layer path: run pool layer `layer`, scaling its input by `scale` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hop {
    pub layer: usize,
    pub scale: f64,
}

/// Where the scale of a hop is applied (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleConvention {
    /// `evomistral` as released: scales the previous layer's MLP branch (hop 0: the embeddings).
    #[default]
    ReleasedBranch,
    /// The paper's: scales the whole hidden state entering the hop.
    PaperStream,
}

/// How hop t's scale is read from an `evomistral` checkpoint's `input_scales`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleLookup {
    /// `input_scales[t]`: one scale per hop.
    #[default]
    ByHop,
    /// `input_scales[input_layers[t]]`, as the code of SakanaAI's vLLM fork (mkshing/vllm) indexes it.
    ByLayer,
}

/// An ordered list of hops over a layer pool.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPath {
    hops: Vec<Hop>,
    convention: ScaleConvention,
}

impl LayerPath {
    /// A path with explicit hops. It is checked against the pool when given to a model.
    pub fn new(hops: Vec<Hop>, convention: ScaleConvention) -> Result<LayerPath> {
        if hops.is_empty() {
            return Err(MistralError::InvalidPath(
                "a path needs at least one hop".into(),
            ));
        }
        if let Some((t, hop)) = hops.iter().enumerate().find(|(_, h)| !h.scale.is_finite()) {
            return Err(MistralError::InvalidPath(format!(
                "hop {t} has a non-finite scale {}",
                hop.scale
            )));
        }
        Ok(LayerPath { hops, convention })
    }

    /// Layers `0..n` in order with unit scales: the ordinary model.
    pub fn identity(num_layers: usize) -> LayerPath {
        LayerPath {
            hops: (0..num_layers)
                .map(|layer| Hop { layer, scale: 1.0 })
                .collect(),
            convention: ScaleConvention::ReleasedBranch,
        }
    }

    /// The paper's parametrisation: `indicator` has `T = M·r` entries over `M = pool_len` layers repeated
    /// `r` times; slot `t` (layer `t mod M`) is on the path when `indicator[t] > 0`. `scales` is the `M×M`
    /// matrix W (row-major, `scales[i * M + j]`) applied on the transition from layer i to layer j; the
    /// first hop takes the embeddings unscaled. Uses [`ScaleConvention::PaperStream`].
    pub fn from_paper(indicator: &[f64], scales: &[f64], pool_len: usize) -> Result<LayerPath> {
        if pool_len == 0 || indicator.is_empty() || indicator.len() % pool_len != 0 {
            return Err(MistralError::InvalidPath(format!(
                "the indicator has {} entries, which is not a positive multiple of the {pool_len} pool layers",
                indicator.len()
            )));
        }
        if scales.len() != pool_len * pool_len {
            return Err(MistralError::InvalidPath(format!(
                "the scaling matrix has {} entries; a pool of {pool_len} layers needs {pool_len}×{pool_len} = {}",
                scales.len(),
                pool_len * pool_len
            )));
        }
        let layers: Vec<usize> = indicator
            .iter()
            .enumerate()
            .filter(|(_, &i)| i > 0.0)
            .map(|(t, _)| t % pool_len)
            .collect();
        let mut hops = Vec::with_capacity(layers.len());
        for (t, &layer) in layers.iter().enumerate() {
            let scale = if t == 0 {
                1.0
            } else {
                scales[layers[t - 1] * pool_len + layer]
            };
            hops.push(Hop { layer, scale });
        }
        LayerPath::new(hops, ScaleConvention::PaperStream)
    }

    /// A path from an `evomistral` checkpoint's `input_layers` and `input_scales`.
    pub fn from_evomistral(
        input_layers: &[i64],
        input_scales: &[f64],
        lookup: ScaleLookup,
    ) -> Result<LayerPath> {
        let mut hops = Vec::with_capacity(input_layers.len());
        for (t, &layer) in input_layers.iter().enumerate() {
            let layer = usize::try_from(layer).map_err(|_| {
                MistralError::InvalidPath(format!("hop {t} names layer {layer}, which is negative"))
            })?;
            let index = match lookup {
                ScaleLookup::ByHop => t,
                ScaleLookup::ByLayer => layer,
            };
            let scale = *input_scales.get(index).ok_or_else(|| {
                MistralError::InvalidPath(format!(
                    "hop {t} reads input_scales[{index}], but only {} scales are stored",
                    input_scales.len()
                ))
            })?;
            hops.push(Hop { layer, scale });
        }
        LayerPath::new(hops, ScaleConvention::ReleasedBranch)
    }

    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    pub fn len(&self) -> usize {
        self.hops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    pub fn convention(&self) -> ScaleConvention {
        self.convention
    }

    /// Checks every hop names an existing pool layer.
    pub fn validate(&self, pool_len: usize) -> Result<()> {
        for (hop, h) in self.hops.iter().enumerate() {
            if h.layer >= pool_len {
                return Err(MistralError::LayerOutOfRange {
                    hop,
                    layer: h.layer,
                    pool_len,
                });
            }
        }
        Ok(())
    }

    /// Whether this is the ordinary forward over `num_layers` layers.
    pub fn is_identity(&self, num_layers: usize) -> bool {
        self.hops.len() == num_layers
            && self
                .hops
                .iter()
                .enumerate()
                .all(|(i, h)| h.layer == i && h.scale == 1.0)
    }

    /// Parses `"0,1,2:0.5,3"`: comma-separated pool layer indices, each optionally `:scale`.
    pub fn parse(text: &str, convention: ScaleConvention) -> Result<LayerPath> {
        let mut hops = Vec::new();
        for (t, item) in text.split(',').map(str::trim).enumerate() {
            let (layer, scale) = match item.split_once(':') {
                Some((l, s)) => (l.trim(), s.trim()),
                None => (item, "1"),
            };
            let layer = layer.parse::<usize>().map_err(|_| {
                MistralError::InvalidPath(format!(
                    "hop {t}: `{item}` is not `LAYER` or `LAYER:SCALE`"
                ))
            })?;
            let scale = scale.parse::<f64>().map_err(|_| {
                MistralError::InvalidPath(format!("hop {t}: scale in `{item}` is not a number"))
            })?;
            hops.push(Hop { layer, scale });
        }
        LayerPath::new(hops, convention)
    }
}

/// `0,5:0.75,2` — the form [`LayerPath::parse`] reads back exactly (scales of 1 are left out; the
/// convention is not part of the text).
impl std::fmt::Display for LayerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (t, hop) in self.hops.iter().enumerate() {
            if t > 0 {
                f.write_str(",")?;
            }
            if hop.scale == 1.0 {
                write!(f, "{}", hop.layer)?;
            } else {
                write!(f, "{}:{}", hop.layer, hop.scale)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_reads_back_exactly() {
        let p = LayerPath::new(
            vec![
                Hop {
                    layer: 0,
                    scale: 1.0,
                },
                Hop {
                    layer: 5,
                    scale: 0.1 + 0.2,
                },
                Hop {
                    layer: 3,
                    scale: 1.0 / 3.0,
                },
            ],
            ScaleConvention::ReleasedBranch,
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            "0,5:0.30000000000000004,3:0.3333333333333333"
        );
        assert_eq!(
            LayerPath::parse(&p.to_string(), ScaleConvention::ReleasedBranch).unwrap(),
            p
        );
    }

    #[test]
    fn paper_path_reads_indicator_and_transition_scales() {
        // M = 3 layers, r = 2: slots 0..6 map to layers 0,1,2,0,1,2.
        let indicator = [1.0, -1.0, 1.0, 0.0, 0.5, 0.0];
        let w: Vec<f64> = (0..9).map(|k| k as f64 / 10.0).collect();
        let path = LayerPath::from_paper(&indicator, &w, 3).unwrap();
        let layers: Vec<usize> = path.hops().iter().map(|h| h.layer).collect();
        assert_eq!(layers, vec![0, 2, 1]);
        assert_eq!(path.hops()[0].scale, 1.0);
        assert_eq!(path.hops()[1].scale, w[2]); // 0 -> 2
        assert_eq!(path.hops()[2].scale, w[2 * 3 + 1]); // 2 -> 1
        assert_eq!(path.convention(), ScaleConvention::PaperStream);
    }

    #[test]
    fn evomistral_lookups_differ_as_documented() {
        let layers = [0, 2, 1];
        let scales = [0.5, 0.6, 0.7];
        let by_hop = LayerPath::from_evomistral(&layers, &scales, ScaleLookup::ByHop).unwrap();
        let by_layer = LayerPath::from_evomistral(&layers, &scales, ScaleLookup::ByLayer).unwrap();
        assert_eq!(
            by_hop.hops().iter().map(|h| h.scale).collect::<Vec<_>>(),
            vec![0.5, 0.6, 0.7]
        );
        assert_eq!(
            by_layer.hops().iter().map(|h| h.scale).collect::<Vec<_>>(),
            vec![0.5, 0.7, 0.6]
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(LayerPath::from_paper(&[1.0; 5], &[1.0; 9], 3).is_err());
        assert!(LayerPath::from_paper(&[1.0; 6], &[1.0; 8], 3).is_err());
        assert!(LayerPath::parse("0,x", ScaleConvention::ReleasedBranch).is_err());
        let p = LayerPath::parse("0, 1:0.5, 7", ScaleConvention::ReleasedBranch).unwrap();
        assert_eq!(
            p.hops()[1],
            Hop {
                layer: 1,
                scale: 0.5
            }
        );
        let err = p.validate(4).unwrap_err().to_string();
        assert!(err.contains("hop 2") && err.contains("layer 7"), "{err}");
    }
}
