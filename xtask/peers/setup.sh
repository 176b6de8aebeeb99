#!/usr/bin/env bash
# Installs the peer libraries (diffusers, k-diffusion, CPU torch) for xtask/peers/peers.py into a
# virtualenv, target/peers-venv under the repo root unless PEERS_VENV says otherwise.
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
req=$here/requirements.txt
python=${PYTHON:-python3}
cpu_index=https://download.pytorch.org/whl/cpu
stamp=$venv/.peers-requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)

check() {
    "$venv/bin/python" -W ignore -c 'import torch, diffusers, k_diffusion, numpy, scipy, torchsde' 2>/dev/null
}

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
    echo "peers venv up to date: $venv" >&2
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -c 'import sys; assert sys.version_info >= (3, 11), "peers need Python >= 3.11, found " + sys.version' 
    echo "creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

torch_pin=$(grep -E '^torch==' "$req")
vision_pin=$(grep -E '^torchvision==' "$req")
installed=$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ -n "$installed" ] && [ "torch==${installed%%+*}" = "$torch_pin" ]; then
    echo "torch $installed already installed" >&2
elif "${pip[@]}" install --index-url "$cpu_index" --timeout 30 --retries 1 "$torch_pin" "$vision_pin"; then
    echo "installed $torch_pin (CPU build) from $cpu_index" >&2
else
    echo "the CPU wheel index is not reachable: torch comes from PyPI (CUDA build, runs on CPU)" >&2
fi

"${pip[@]}" install -r "$req"
if ! check; then
    echo "peers venv at $venv does not import torch, diffusers and k_diffusion" >&2
    exit 1
fi
echo "$want" > "$stamp"
"$venv/bin/python" -W ignore -c '
import sys, torch, diffusers, numpy
from importlib.metadata import version
print("peers venv ready: python", sys.version.split()[0], "torch", torch.__version__,
      "diffusers", diffusers.__version__, "k-diffusion", version("k-diffusion"), "numpy", numpy.__version__,
      file=sys.stderr)'
