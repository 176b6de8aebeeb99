#!/usr/bin/env bash
# Installs the pinned torch of xtask/torch/requirements.txt into a virtualenv for
# `cargo xtask bench --torch`: target/torch-venv under the repo root unless TORCH_VENV says
# otherwise. Idempotent: a second run checks and returns (xtask/venv.sh does the work).
#
#   bash xtask/torch/setup.sh
#   cargo xtask bench --torch            # --python target/torch-venv/bin/python is the default
#
# Needs CPython 3.10 or newer, as `python3` or the interpreter named by PYTHON.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${TORCH_VENV:-$root/target/torch-venv}
bash "$here/../venv.sh" "$here/requirements.txt" "$venv" 'import torch, numpy' 10
"$venv/bin/python" -W ignore -c 'import sys, torch; print("torch venv ready: python", sys.version.split()[0], "torch", torch.__version__, file=sys.stderr)'
