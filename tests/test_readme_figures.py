"""The figures the README and docs/ quote about the bundled routes (accuracy on examples/bundled_eval.jsonl, the
calibration sentence count, the Python snippet's output, the example decision) match a fresh measurement by
scripts/readme_figures.py, so they cannot drift from what runs. Timings are rewritten by --write, not checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_figures_match_a_fresh_run(encoder_dir: Path) -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_figures.py"), "--check"],
                       capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-3000:]
