#!/usr/bin/env bash
# The method table's speed figures: for each named method (default: every method added after the first two),
# evomerge, then mergekit, then evomerge again, back to back on the same 1.1 B files, outputs removed between
# runs so the disk never holds more than one. Needs the model set (`cargo bench -p evomerge-merge --bench merge
# -- generate`) and mergekit 0.1.5 (see mergekit_side_by_side.sh for MERGEKIT_YAML and the other settings).
#
#   crates/merge/bench/all_methods.sh [method ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
dir="${EVOMERGE_BENCH_DIR:-/tmp/evomerge-bench}"
methods=("$@")
[ ${#methods[@]} -eq 0 ] && methods=(breadcrumbs breadcrumbs_ties della della_linear sce model_stock nearswap
  arcee_fusion ram ramplus_tl nuslerp multislerp karcher)
evomerge() {
  cargo bench -q -p evomerge-merge --bench merge -- "$1" 2>&1 | grep -v '^$' | tail -1
  rm -rf "$dir/out-evomerge-$1"
}
for m in "${methods[@]}"; do
  echo "=== $m $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
  evomerge "$m"
  crates/merge/bench/mergekit_side_by_side.sh "$m" 2>&1 | grep -v -e Warning -e deprecated | tail -1
  rm -rf "$dir/out-mergekit-$m"
  evomerge "$m"
done
