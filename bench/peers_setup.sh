#!/usr/bin/env bash
# Create the peer routers' venv for bench/peers.py: sglang-router and vllm-router from PyPI, pinned
# to the versions shared/reference/tools.md tested. Their code never enters this repository.
# Usage: bash bench/peers_setup.sh [VENV_DIR]   (default: .peers-venv at the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.peers-venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q 'sglang-router==0.3.2' 'vllm-router==0.1.17'
"$venv/bin/vllm-router" --help >/dev/null
"$venv/bin/python" -c "import sglang_router"
echo "peer routers installed in $venv"
