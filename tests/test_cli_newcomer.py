"""What a newcomer hits first with the CLI (issue 17): --neighbours in the text output, calibrate --out never
overwriting silently, eval --report without the plotting extra failing fast with the install line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "examples" / "bundled_eval.jsonl"


def run(*args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{pre}\nfrom semroute.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env=os.environ.copy())


def test_route_neighbours_shown_without_json(bundle_dir: Path) -> None:
    r = run("route", "--index", str(bundle_dir), "--neighbours", "2", "my card was charged twice")
    assert r.returncode == 0, r.stderr
    near = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("near:")]
    assert len(near) == 2 and "billing" in near[0], r.stdout
    r = run("route", "--index", str(bundle_dir), "--neighbours", "0", "my card was charged twice")
    assert r.returncode == 0 and "near:" not in r.stdout


def test_calibrate_refuses_existing_out_unless_forced(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v2"
    args = ["calibrate", "--index", str(bundle_dir), "--data", str(EVAL), "--out", str(out)]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    first = json.loads((out / "manifest.json").read_text())["version"]
    r = run(*args)
    assert r.returncode == 2 and "--out" in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((out / "manifest.json").read_text())["version"] == first  # untouched
    r = run(*args, "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "manifest.json").is_file()
    # --force replaces a bundle, never some other directory
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = run("calibrate", "--index", str(bundle_dir), "--data", str(EVAL), "--out", str(other), "--force")
    assert r.returncode == 2 and "not a bundle" in r.stderr
    assert (other / "keep.txt").read_text() == "mine"


def test_eval_report_without_matplotlib_says_how_to_install(bundle_dir: Path, tmp_path: Path) -> None:
    # as in the venv make serve creates: the eval extra (matplotlib) is not installed
    r = run("eval", "--index", str(bundle_dir), "--data", str(EVAL), "--report", str(tmp_path / "rep"),
            pre="import sys; sys.modules['matplotlib'] = None")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "pip install 'semroute[eval]'" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "rep").exists()


def test_eval_report_says_per_route_thresholds_are_off_the_global_curve(bundle_dir: Path, tmp_path: Path) -> None:
    # the bundled routes set billing and account to 0.32 and the rest to 0.55
    r = run("eval", "--index", str(bundle_dir), "--data", str(EVAL), "--report", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "thresholds are per route (0.32-0.55)" in text and "beside those curves" in text
