#!/usr/bin/env bash
# Makes or checks a virtualenv holding a pinned requirements file, with torch (and torchvision
# where pinned) from the CPU wheel index when it is reachable, else from PyPI (the CUDA build,
# which runs on the CPU too). Idempotent: a second run checks a stamp and the imports, and
# returns. Used by xtask/peers/setup.sh and xtask/torch/setup.sh.
#
#   bash xtask/venv.sh REQUIREMENTS VENV 'import torch, numpy' MIN_PYTHON_MINOR
#
# The interpreter is `python3`, or the one named by PYTHON (3.MIN_PYTHON_MINOR or newer).
set -euo pipefail

req=$1 venv=$2 imports=$3 minor=$4
python=${PYTHON:-python3}
cpu_index=https://download.pytorch.org/whl/cpu
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)

check() {
    "$venv/bin/python" -W ignore -c "$imports" 2>/dev/null
}

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
    echo "venv up to date: $venv" >&2
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -c "import sys; assert sys.version_info >= (3, $minor), 'needs Python >= 3.$minor, found ' + sys.version"
    echo "creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
mapfile -t torch_pins < <(grep -E '^(torch|torchvision)==' "$req")
installed=$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ -n "$installed" ] && [ "torch==${installed%%+*}" = "${torch_pins[0]}" ]; then
    echo "torch $installed already installed" >&2
elif "${pip[@]}" install --index-url "$cpu_index" --timeout 30 --retries 1 "${torch_pins[@]}"; then
    echo "installed ${torch_pins[*]} (CPU build) from $cpu_index" >&2
else
    echo "the CPU wheel index is not reachable: torch comes from PyPI (CUDA build, runs on CPU)" >&2
fi
"${pip[@]}" install -r "$req"
if ! check; then
    echo "the venv at $venv fails: $imports" >&2
    exit 1
fi
echo "$want" > "$stamp"
