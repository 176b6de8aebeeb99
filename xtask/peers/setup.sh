#!/usr/bin/env bash
# Installs the peer libraries (diffusers, k-diffusion, CPU torch) for xtask/peers/peers.py into a
# virtualenv, target/peers-venv under the repo root unless PEERS_VENV says otherwise
# (xtask/venv.sh does the work).
#
#   xtask/peers/setup.sh                      # idempotent: a second run checks and returns
#   target/peers-venv/bin/python xtask/peers/peers.py DIR
#
# Needs CPython 3.11 or newer (diffusers 0.42 requires it; the pins were made on 3.11), as
# `python3` or the interpreter named by PYTHON. torch comes from the CPU wheel index when it is
# reachable, else from PyPI (the CUDA build: a few GB of nvidia-* wheels, but it runs on CPU).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${PEERS_VENV:-$root/target/peers-venv}
bash "$here/../venv.sh" "$here/requirements.txt" "$venv" \
    'import torch, diffusers, k_diffusion, numpy, scipy, torchsde' 11
"$venv/bin/python" -W ignore -c '
import sys, torch, diffusers, numpy
from importlib.metadata import version
print("peers venv ready: python", sys.version.split()[0], "torch", torch.__version__,
      "diffusers", diffusers.__version__, "k-diffusion", version("k-diffusion"), "numpy", numpy.__version__,
      file=sys.stderr)'
