#!/usr/bin/env bash
# Installs the pinned torch of xtask/torch/requirements.txt into a virtualenv for
# `cargo xtask bench --torch`: target/torch-venv under the repo root unless TORCH_VENV says
# otherwise. Idempotent: a second run checks and returns.
#
#   bash xtask/torch/setup.sh
#   cargo xtask bench --torch            # --python target/torch-venv/bin/python is the default
#
# Needs CPython 3.10 or newer as `python3` or the interpreter named by PYTHON. torch comes
# from the CPU wheel index when it is reachable, else from PyPI (the CUDA build, which runs
# on the CPU too).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${TORCH_VENV:-$root/target/torch-venv}
req=$here/requirements.txt
python=${PYTHON:-python3}
cpu_index=https://download.pytorch.org/whl/cpu
stamp=$venv/.torch-requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)

check() {
    "$venv/bin/python" -W ignore -c 'import torch, numpy' 2>/dev/null
}

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
    echo "torch venv up to date: $venv" >&2
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -c 'import sys; assert sys.version_info >= (3, 10), "needs Python >= 3.10, found " + sys.version'
    echo "creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
torch_pin=$(grep -E '^torch==' "$req")
installed=$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ -n "$installed" ] && [ "torch==${installed%%+*}" = "$torch_pin" ]; then
    echo "torch $installed already installed" >&2
elif "${pip[@]}" install --index-url "$cpu_index" --timeout 30 --retries 1 "$torch_pin"; then
    echo "installed $torch_pin (CPU build) from $cpu_index" >&2
else
    echo "the CPU wheel index is not reachable: torch comes from PyPI (CUDA build, runs on CPU)" >&2
fi
"${pip[@]}" install -r "$req"
if ! check; then
    echo "torch venv at $venv does not import torch" >&2
    exit 1
fi
echo "$want" > "$stamp"
"$venv/bin/python" -W ignore -c 'import sys, torch; print("torch venv ready: python", sys.version.split()[0], "torch", torch.__version__, file=sys.stderr)'
