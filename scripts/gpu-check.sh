#!/usr/bin/env bash
# CPU-vs-GPU parity on a machine with an NVIDIA GPU, no network and no Rust toolchain (issue #19).
#
# NOT RUN ON A GPU YET: written without access to one; expect to fix small things on its first run.
#
# Usage:   scripts/gpu-check.sh BINARY FIXTURES_DIR
#   BINARY        `evomerge` built with `cargo build --release --features cuda` (needs libcuda, cuBLAS, NVRTC there)
#   FIXTURES_DIR  a copy of tests/fixtures/mistral (carried with the binary)
# What it checks: `evomerge generate` greedy and beam-search completions of the generation fixture, in f32, are
# identical with --device cpu and --device cuda. Logits parity is not in it yet: `evomerge logits` has no
# --device flag. Prints one table row per check; exits non-zero if any differs.
set -euo pipefail
bin="${1:?usage: gpu-check.sh BINARY FIXTURES_DIR}"
fixtures="${2:?usage: gpu-check.sh BINARY FIXTURES_DIR}"
model="$fixtures/generation/model"
[[ -x "$bin" ]] || { echo "gpu-check: $bin is not an executable" >&2; exit 1; }
[[ -d "$model" ]] || { echo "gpu-check: no generation fixture at $model" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '%s\n' '{"prompt": "The cat"}' '{"prompt": "Once upon a time, in a land far away"}' '{"prompt": "1 2 3"}' \
    > "$work/prompts.jsonl"

failed=0
printf '%-28s %-8s %-10s %s\n' check result cpu_s cuda_s
for beams in 1 3; do
    for device in cpu cuda; do
        start=$(date +%s.%N)
        "$bin" generate --model "$model" --prompts "$work/prompts.jsonl" --max-new-tokens 32 \
            --num-beams "$beams" --dtype f32 --device "$device" --out "$work/$device-$beams.jsonl"
        awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }' > "$work/$device-$beams.s"
    done
    result=identical
    cmp -s "$work/cpu-$beams.jsonl" "$work/cuda-$beams.jsonl" || { result=DIFFERS; failed=1; }
    printf '%-28s %-8s %-10s %s\n' "generate num_beams=$beams" "$result" "$(cat "$work/cpu-$beams.s")" \
        "$(cat "$work/cuda-$beams.s")"
done
exit "$failed"
