//! Evaluation datasets (MGSM-JA, the GSM8K-JA search set, JA-VG-VQA-500, JA-VLM-Bench-In-the-Wild):
//! loading from the hub cache or local files, with per-row validation.
