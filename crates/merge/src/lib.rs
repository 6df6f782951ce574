//! Parameter-space model merging with mergekit semantics: one tensor-level merge function behind a
//! method registry, used by both the streaming file merger and the in-memory merger.
