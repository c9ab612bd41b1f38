"""The proxy process loads the data plane only: no training, plotting or load-generation code.

scikit-learn, SciPy and matplotlib are used to train and evaluate the length
model and to draw reports; pulled into ``sluice serve`` they cost ~1 s of
start-up and ~120 MB of resident memory in every proxy replica. The bundled
model is plain JSON read without them (predictors/persistence.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy", "matplotlib", "pandas", "loadgen")

PROBE = """
import json, sys
from core.config import load_config
from sluice.cli import build_parser
args = build_parser("serve").parse_args(["serve", "--config", sys.argv[1]])
from router.app import build_app
app = build_app(load_config(args.config))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_serve_builds_the_app_without_training_or_plotting_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "configs" / "reference.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "router" in loaded and "predictors" in loaded  # the probe did build the proxy
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_help_still_lists_every_subcommand() -> None:
    from sluice.cli import COMMANDS, build_parser

    text = build_parser().format_help()
    for name in COMMANDS:
        assert name in text
