#!/usr/bin/env bash
# The GPU checks and benchmarks of issue #19, as one script for a machine with an NVIDIA GPU, no network and no
# Rust toolchain (the `device` tool's machine). Run on a GPU machine only; nothing here is part of CI.
#
# Build here (needs the CUDA check's toolchain venv; minutes), then run there with the repo:
#     scripts/check-cuda.sh --build-gpu-check .gpu                # .gpu/gpu_check (CUDA) and .gpu/merge-bench
#     scripts/gpu-check.sh .gpu                                   # on the GPU machine, from the repo root
# (`.gpu` is git-ignored; with the device tool: run(command="bash scripts/gpu-check.sh .gpu", carry=[".gpu"])).
#
# What it does, each step printing `RESULT ...` lines, gathered into one table at the end (also $OUT/gpu-check.txt
# when OUT is set):
#   1. generate-parity: f32 logits CPU vs GPU (≤ 1e-3) and greedy / 3-beam completions (identical), fixtures
#   2. vlm-parity: LLaVA image features (tower + projector) CPU vs GPU (≤ 1e-3) on the fixture, and its images/s
#   3. vlm-bench: images/s through a full-size LLaVA-1.6-Mistral-7B tower + projector (CLIP ViT-L/14-336, shapes from
#      its published config, random bf16 weights made on the GPU): per 336-px crop at batch 1 and 8, and per anyres
#      image (a 640x480 photo: 5 crops)
#   4. merge-parity: candidate merges on the GPU vs the CPU merger (DARE-TIES, DARE-linear, TIES, linear, slerp), f32
#      and bf16, bit for bit (DARE masks and TIES thresholds too)
#   5. the 1.1 B model set (3 × TinyLlama-shaped bf16, synthetic) written to $EVOMERGE_BENCH_DIR
#   6. merge-bench: seconds per DARE-TIES (and per TIES) candidate into a live bf16 model on the GPU (resident sources), also
#      extrapolated to 7B by parameter count, vs the
#      CPU merger + upload
#   7. decode-bench: greedy tokens/s at batch 1 and 32, bf16, evomerge vs transformers (python3 with torch and
#      transformers, as the machine has) on the same model and prompts
#   8. vqa-extrapolate: JA-VG-VQA-500-shaped work (500 items, 5 beams, 512 max tokens) in seconds, EXTRAPOLATED from
#      the measured tower + projector, prefill (640 positions) and 5-beam decode step of the 1.1 B base model, and
#      scaled to the 7.24 B LLM by parameter bytes (`measured_*` and `extrapolated_*` keys say which is which)
# Steps 3 and 8 take seconds on an H200. With GPU_CHECK_DEVICE=cpu they run shrunk (2 tower layers, 1 crop, a 64-token
# prompt, 4 decode steps): a check that the programs work, not a speed figure.
# Exit: non-zero if a parity check fails or a program is missing; benchmarks only report.
set -uo pipefail
bins="${1:?usage: gpu-check.sh DIR (holding gpu_check and merge-bench, from check-cuda.sh --build-gpu-check)}"
# check-cuda.sh writes the programs gzipped (to fit a device run's carry); unpack them next to a writable copy.
if [[ -f "$bins/gpu_check.gz" ]]; then
    unpacked="$(mktemp -d)"
    for program in gpu_check merge-bench; do
        gzip -dc "$bins/$program.gz" > "$unpacked/$program" && chmod +x "$unpacked/$program" || exit 1
    done
    bins="$unpacked"
fi
for program in gpu_check merge-bench; do
    [[ -x "$bins/$program" ]] || { echo "gpu-check: $bins/$program missing; build it with scripts/check-cuda.sh --build-gpu-check $bins" >&2; exit 1; }
done
# The CUDA libraries the program links (cudart, cuBLAS, cuRAND, NVRTC) from python3's NVIDIA packages, as the
# device image's torch installs them; libcuda is the driver's. Say which are missing before running anything.
nvidia_libs="$(python3 -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "lib*.so*"), recursive=True)})))' 2>/dev/null)"
export LD_LIBRARY_PATH="${nvidia_libs:+$nvidia_libs:}${LD_LIBRARY_PATH:-}"
missing="$(ldd "$bins/gpu_check" 2>/dev/null | grep 'not found')"
if [[ -n "$missing" ]]; then
    echo "gpu-check: $bins/gpu_check cannot load these libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    echo "$missing" >&2
    exit 1
fi
export EVOMERGE_BENCH_DIR="${EVOMERGE_BENCH_DIR:-/tmp/evomerge-bench}"
device="${GPU_CHECK_DEVICE:-cuda}"   # `cpu` runs the same steps on the CPU (a dry run, with programs built without --features cuda: a CUDA build needs the driver's libcuda to load)
# A CPU dry run shrinks the two full-size benchmarks (the 0.3 B tower takes seconds per crop there).
if [[ "$device" == cpu ]]; then
    vlm_bench_size=(--layers 2 --images 1 --batch 1)
    vqa_size=(--layers 2 --images 1 --prompt-len 64 --new-tokens 4 --repeats 1)
else
    vlm_bench_size=(--images 32 --batch 1,8)
    vqa_size=(--images 8 --prompt-len 640 --new-tokens 64 --repeats 3)
fi
log="$(mktemp)"
failed=0
step() { # name, command...
    local name="$1"; shift
    local started=$SECONDS
    echo "== $name"
    if "$@" 2>&1 | tee -a "$log"; then
        echo "== $name: done in $((SECONDS - started)) s"
    else
        echo "== $name: FAILED after $((SECONDS - started)) s"
        echo "RESULT $name FAILED" >> "$log"
        return 1
    fi
}
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
echo "RESULT machine gpu=\"${gpu:-unknown}\" date=$(date -u +%Y-%m-%d)" | tee -a "$log"
step generate-parity "$bins/gpu_check" generate-parity --device "$device" --model tests/fixtures/mistral/generation/model || failed=1
step vlm-parity "$bins/gpu_check" vlm-parity --device "$device" --model tests/fixtures/vision/llava \
    --images tests/fixtures/vision/images || failed=1
step vlm-bench "$bins/gpu_check" vlm-bench --device "$device" "${vlm_bench_size[@]}"
step merge-parity "$bins/gpu_check" merge-parity --device "$device" --fixtures tests/fixtures/merge || failed=1
step model-set "$bins/merge-bench" generate || failed=1
if [[ -f "$EVOMERGE_BENCH_DIR/ft2/config.json" ]]; then
    step merge-bench "$bins/gpu_check" merge-bench --device "$device" --models "$EVOMERGE_BENCH_DIR" --candidates 5
    step decode-bench "$bins/gpu_check" decode-bench --device "$device" --model "$EVOMERGE_BENCH_DIR/base" --batch 1,32 --new-tokens 128
    step vqa-extrapolate "$bins/gpu_check" vqa-extrapolate --device "$device" --model "$EVOMERGE_BENCH_DIR/base" \
        --beams 5 --items 500 --max-tokens 512 --target-params 7.24e9 "${vqa_size[@]}"
    step decode-bench-transformers python3 scripts/gpu_decode_transformers.py "$EVOMERGE_BENCH_DIR/base" \
        --batch 1,32 --new-tokens 128
fi
echo
echo "== gpu-check summary ($( [[ $failed == 0 ]] && echo 'parity passed' || echo 'PARITY FAILED'))"
grep '^RESULT' "$log" | sed 's/^RESULT //' | tee "${OUT:-/tmp}/gpu-check.txt"
exit "$failed"
