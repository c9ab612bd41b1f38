#!/usr/bin/env bash
# Create the venv of bench/aiperf_crosscheck.py: NVIDIA aiperf from PyPI (~4 min, ~1.2 GB, no torch),
# pinned to the version shared/reference/tools.md tested. Never part of the project's own venv.
# Usage: bash bench/aiperf_setup.sh [VENV_DIR]   (default: .aiperf-venv at the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.aiperf-venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q 'aiperf==0.13.0'
"$venv/bin/aiperf" --help >/dev/null
echo "aiperf installed in $venv"
