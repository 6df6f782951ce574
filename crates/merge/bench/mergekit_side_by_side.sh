#!/usr/bin/env bash
# Run the benchmark's recipes through mergekit on the same machine, for a side-by-side figure with
# `cargo bench -p evomerge-merge --bench merge`. Uses the model set that benchmark writes (run it,
# or `cargo bench -p evomerge-merge --bench merge -- generate`, first).
#
#   crates/merge/bench/mergekit_side_by_side.sh [ties|dare_ties|della|sce|... (any recipe of benches/merge.rs)]
#
# Env: EVOMERGE_BENCH_DIR (default /tmp/evomerge-bench), MERGEKIT_YAML (default
# /root/pyref/models/bin/mergekit-yaml, mergekit 0.1.5 on torch CPU), MERGEKIT_THREADS (torch
# threads; default: all cores). Prints wall seconds and peak RSS of each mergekit run.
set -euo pipefail

dir="${EVOMERGE_BENCH_DIR:-/tmp/evomerge-bench}"
mergekit="${MERGEKIT_YAML:-/root/pyref/models/bin/mergekit-yaml}"
threads="${MERGEKIT_THREADS:-$(nproc)}"
recipes=("$@")
[ ${#recipes[@]} -eq 0 ] && recipes=(ties dare_ties)

for model in base ft1 ft2; do
  [ -f "$dir/$model/config.json" ] || { echo "missing $dir/$model; run: cargo bench -p evomerge-merge --bench merge -- generate" >&2; exit 1; }
done

python="$(dirname "$mergekit")/python"
export HF_HUB_OFFLINE=1
cd "$dir"
for recipe in "${recipes[@]}"; do
  out="$dir/out-mergekit-$recipe"
  rm -rf "$out"
  # Peak RSS of the child via getrusage(RUSAGE_CHILDREN); wall time around the whole command.
  "$python" - "$mergekit" "$recipe.yml" "$out" "$threads" <<'PY'
import resource, subprocess, sys, time
mergekit, recipe, out, threads = sys.argv[1:5]
# No model card: writing one queries the hub, which fails (after the merge) on an offline machine.
cmd = [mergekit, recipe, out, "--lazy-unpickle", "--no-copy-tokenizer", "--no-write-model-card",
       "--random-seed", "0", "--num-threads", threads, "--quiet"]
t0 = time.time()
subprocess.run(cmd, check=True)
secs = time.time() - t0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
rss_mb = usage.ru_maxrss / 1024
cpu = usage.ru_utime + usage.ru_stime
print(f"{recipe.removesuffix('.yml'):>10}: mergekit {secs:.2f} s  (cpu {cpu:.1f} s)  peak RSS {rss_mb:.0f} MB  (threads {threads})")
PY
done
