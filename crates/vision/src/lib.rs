//! The frozen half of a LLaVA model: CLIP vision tower, projector and image preprocessing (LLaVA-1.5
//! and LLaVA-NeXT anyres), composed with the mergeable backbone.
