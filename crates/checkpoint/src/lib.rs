//! Hugging Face checkpoint I/O: open model directories (single or sharded safetensors, memory-mapped,
//! validated), resolve hub ids, and write merged models atomically.
