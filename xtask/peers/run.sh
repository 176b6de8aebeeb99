#!/usr/bin/env bash
# The side-by-side peer benchmark (docs/peers.md): sdeflow's few-step solvers beside
# diffusers' and k-diffusion's, on the exact score of `ring` and `mix8`, at NFE 5, 10, 20 and
# 50, one endpoint and one metric for everyone. CI never runs it (it needs PyPI and takes
# tens of minutes on 2 cores).
#
#   bash xtask/peers/run.sh [DIR]        # default DIR: target/peers; the table: DIR/table.md
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-target/peers}
mkdir -p "$dir"
bash xtask/peers/setup.sh
cargo run --quiet --release -p xtask-linked -- peers export "$dir"
target/peers-venv/bin/python xtask/peers/peers.py "$dir"
# Each library's best-SW2 candidates again on fresh starts and noise: out-of-sample SW2.
cargo run --quiet --release -p xtask-linked -- peers select "$dir"
target/peers-venv/bin/python xtask/peers/peers.py --rescore "$dir"
cargo run --quiet --release -p xtask-linked -- peers table "$dir" | tee "$dir/table.md"
