#!/usr/bin/env bash
# Type-check the whole workspace with the `cuda` feature on, without a system CUDA toolkit or a GPU.
#
# Why: issue 3 requires that the CUDA build compiles. CI builds CPU only and has no nvcc, but
# candle-kernels (pulled in by candle-core/cuda) runs nvcc in its build script and cudarc probes
# `nvcc --version` to pick its CUDA API version. NVIDIA's CUDA 13 Python wheels ship a working nvcc
# (the cu12 wheels do not), so this script installs them into a private virtualenv and points the
# CUDA environment variables at them.
#
# What it does:
#   1. creates (or reuses) a venv at ${EVOMERGE_CACHE:-$HOME/.cache/evomerge}/cuda-venv;
#   2. installs the pinned toolkit `cuda-toolkit[nvcc,cudart,cccl]==13.4.3` (skipped when present);
#      13.4 is pinned because cudarc 0.19 rejects CUDA 13.5 (CUDARC_CUDA_VERSION=13040 is set as well);
#   3. exports PATH, CUDA_HOME, CUDA_PATH, CUDA_ROOT -> <site-packages>/nvidia/cu13 and
#      CUDA_COMPUTE_CAP (default 90 = H100/H200);
#   4. runs `cargo check --workspace --features cuda --all-targets` with its own target dir
#      (${EVOMERGE_CUDA_TARGET_DIR:-${EVOMERGE_CACHE:-$HOME/.cache/evomerge}/cuda-check-target}) so it never
#      invalidates the CPU build, and outside the clone so a fresh CI clone reuses it (scripts/test.sh calls this);
#   5. compiles the CUDA C kernels evomerge builds at run time with NVRTC (crates/evolve/src/device_merge/*.cu)
#      to PTX with nvcc, with the arithmetic settings NVRTC gets (no FMA contraction, IEEE division).
#
# Usage:   scripts/check-cuda.sh [extra cargo args...]
#          scripts/check-cuda.sh --build-gpu-check DIR   (the programs scripts/gpu-check.sh runs; see there)
# Needs:   python3 (with venv), a C/C++ host compiler for nvcc (gcc/g++), network access to PyPI on first run.
# Cost:    the first run spends several minutes in nvcc compiling candle's kernels to PTX.
# Note:    this is a *check* only. Linking a binary (`cargo build --features cuda`) additionally needs
#          libcuda, cuBLAS, cuRAND and NVRTC, which this script does not install.
# Exit:    non-zero on any failure (venv, pip, missing nvcc, cargo), with a message saying which step.
set -euo pipefail

readonly CUDA_TOOLKIT_PIN="13.4.3"
readonly CUDARC_VERSION_PIN="13040"

die() {
    echo "check-cuda: error: $*" >&2
    exit 1
}
trap 'echo "check-cuda: FAILED (line $LINENO, exit $?)" >&2' ERR

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${EVOMERGE_CACHE:-$HOME/.cache/evomerge}"
venv_dir="$cache_dir/cuda-venv"
python="${PYTHON:-python3}"
target_dir="${EVOMERGE_CUDA_TARGET_DIR:-$cache_dir/cuda-check-target}"

command -v cargo >/dev/null || die "cargo not found on PATH"
command -v "$python" >/dev/null || die "$python not found; set PYTHON to a Python 3 interpreter"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ host compiler (g++) found; nvcc needs one"

# 1. virtualenv
mkdir -p "$cache_dir"
if [[ ! -x "$venv_dir/bin/python" ]]; then
    echo "check-cuda: creating virtualenv $venv_dir"
    "$python" -m venv "$venv_dir" || die "could not create a virtualenv at $venv_dir (is python3-venv installed?)"
fi
venv_python="$venv_dir/bin/python"

# 2. pinned toolkit (building the gpu-check programs also links cuBLAS, cuRAND and NVRTC: see below)
extras="nvcc,cudart,cccl"
[[ "${1:-}" == "--build-gpu-check" ]] && extras="$extras,cublas,curand,nvrtc"
installed="$("$venv_python" -m pip show cuda-toolkit 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [[ "$installed" != "$CUDA_TOOLKIT_PIN" ]] \
    || { [[ "$extras" == *curand* ]] && ! "$venv_python" -m pip show nvidia-curand nvidia-cublas nvidia-cuda-nvrtc >/dev/null 2>&1; }; then
    echo "check-cuda: installing cuda-toolkit[$extras]==$CUDA_TOOLKIT_PIN into $venv_dir"
    "$venv_python" -m pip install --disable-pip-version-check --quiet \
        "cuda-toolkit[$extras]==$CUDA_TOOLKIT_PIN" \
        || die "pip install of cuda-toolkit[$extras]==$CUDA_TOOLKIT_PIN failed"
fi

# 3. environment
site_packages="$("$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cuda_root="$site_packages/nvidia/cu13"
[[ -x "$cuda_root/bin/nvcc" ]] || die "nvcc not found at $cuda_root/bin/nvcc after install"
export PATH="$cuda_root/bin:$PATH"
export CUDA_HOME="$cuda_root" CUDA_PATH="$cuda_root" CUDA_ROOT="$cuda_root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-$CUDARC_VERSION_PIN}"
export CARGO_TARGET_DIR="$target_dir"

echo "check-cuda: $(nvcc --version | tail -n 2 | head -n 1)"
echo "check-cuda: $(cargo --version), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION"
echo "check-cuda: CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

cd "$repo_root"
start=$SECONDS

# `--build-gpu-check DIR`: instead of checking, build what scripts/gpu-check.sh runs on a GPU machine (which has
# no Rust toolchain): the `gpu_check` example with CUDA and the merge benchmark (for its model set), release,
# stripped, into DIR. candle 0.11 builds cudarc with `dynamic-linking`, so the link needs libcuda, libcudart,
# libcublas, libcublasLt, libcurand and libnvrtc. All but libcuda come from PyPI's cuda-toolkit extras (step 2
# installs them into the same venv); libcuda is the driver's and has no package, so the link uses a stub generated here (every
# `cu*` symbol the cudarc library leaves undefined, soname libcuda.so.1): the real driver library is what the
# program loads on the GPU machine, and the other libraries come from its Python's NVIDIA packages there (the
# device image's torch brings nvidia-cublas, -curand, -cuda-nvrtc, -cuda-runtime; gpu-check.sh finds them).
if [[ "${1:-}" == "--build-gpu-check" ]]; then
    out="${2:?usage: check-cuda.sh --build-gpu-check DIR}"
    mkdir -p "$out"
    for lib in cudart cublas cublasLt nvrtc curand; do
        versioned="$(ls "$cuda_root/lib/lib$lib.so."* 2>/dev/null | grep -v builtins | head -n 1)"
        [[ -n "$versioned" ]] || die "lib$lib.so.* not found in $cuda_root/lib"
        ln -sf "$(basename "$versioned")" "$cuda_root/lib/lib$lib.so"
    done
    # The library first (no binary is linked), so the cudarc rlib exists to read the driver symbols from.
    cargo build --release --features cuda -p evomerge-evolve --lib || die "building evomerge-evolve with CUDA failed"
    rlib="$(ls -t "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib | head -n 1)"
    nm -u "$rlib" 2>/dev/null | awk '{print $2}' | grep -E '^cu[A-Z]' | sort -u \
        | sed 's/.*/int &(void) { return 999; }/' > "$CARGO_TARGET_DIR/libcuda_stub.c"
    [[ -s "$CARGO_TARGET_DIR/libcuda_stub.c" ]] || die "no driver symbols found in $rlib"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cuda_root/lib/libcuda.so" "$CARGO_TARGET_DIR/libcuda_stub.c" \
        || die "building the libcuda link stub failed"
    cargo build --release --features cuda -p evomerge-evolve --example gpu_check || die "building gpu_check failed"
    cp "$CARGO_TARGET_DIR/release/examples/gpu_check" "$out/gpu_check"
    bench="$(cargo bench -p evomerge-merge --bench merge --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
    [[ -x "$bench" ]] || die "building the merge benchmark failed"
    cp "$bench" "$out/merge-bench"
    strip "$out/gpu_check" "$out/merge-bench" 2>/dev/null || true
    # gzipped: the CUDA program holds candle's PTX (~60 MB), and a device run carries at most 64 MiB with the tree.
    gzip -f -9 "$out/gpu_check" "$out/merge-bench" || die "compressing the programs failed"
    ls -l "$out"
    echo "check-cuda: built the gpu-check programs into $out in $((SECONDS - start)) s"
    exit 0
fi

# 4. check
cargo check --workspace --features cuda --all-targets "$@" || die "cargo check --features cuda failed"
# 5. the CUDA C kernels evomerge compiles at run time with NVRTC: compile them here to PTX with the same
#    arithmetic settings (no FMA contraction, IEEE division), so a syntax or type error shows in CI, not on a GPU.
#    Each is compiled after merge_common.cuh, as the program prepends it.
for kernel in crates/evolve/src/device_merge/*.cu; do
    name="$(basename "$kernel" .cu)"
    cat crates/evolve/src/device_merge/merge_common.cuh "$kernel" > "$CARGO_TARGET_DIR/$name.cu"
    nvcc --ptx -arch="sm_$CUDA_COMPUTE_CAP" --fmad=false --prec-div=true -o "$CARGO_TARGET_DIR/$name.ptx" \
        "$CARGO_TARGET_DIR/$name.cu" || die "nvcc could not compile $kernel (after merge_common.cuh)"
done
echo "check-cuda: OK in $((SECONDS - start)) s"
