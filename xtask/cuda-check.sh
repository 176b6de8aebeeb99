#!/usr/bin/env bash
# Compile-checks the CUDA and NCCL paths on a machine without a GPU: nvcc (for candle's PTX
# kernels) comes from NVIDIA's PyPI wheels into a virtualenv; cudarc's NCCL bindings are its
# own, and libnccl is needed only to link and run. CI does not run this (about 1.5 GB and
# 9 minutes on two cores).
#
#   bash xtask/cuda-check.sh                       # sdeflow-cli with `nccl` (which implies `cuda`)
#   bash xtask/cuda-check.sh -p sdeflow-cli --features cuda
#
# VENV (default $TMPDIR/cuda-nvcc-venv) and CARGO_TARGET_DIR (default $TMPDIR/cuda-check-target)
# are kept between runs; CUDA_COMPUTE_CAP defaults to 90 (H100).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-p sdeflow-cli --features nccl)
venv=${VENV:-${TMPDIR:-/tmp}/cuda-nvcc-venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q nvidia-cuda-nvcc==13.2.86 nvidia-nvvm==13.2.86 \
        nvidia-cuda-crt==13.2.86 nvidia-cuda-runtime==13.2.86 nvidia-cuda-cccl
fi
cuda=$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13)
export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/cuda-check-target} \
    cargo check --locked "${args[@]}"
