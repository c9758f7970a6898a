"""A bundle derived from a signed bundle (``semroute calibrate``, ``semroute fit-quality``) is a new version: the
source's signature is dropped (it vouched for other bytes), the command says to sign the new version, and
``serve --trusted-key`` refuses it, clearly, until ``semroute sign`` has signed it. All through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import start_subprocess

from semroute.signing import SIGNATURE_FILE, keygen

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "examples" / "bundled_eval.jsonl"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semroute.cli", *args], capture_output=True, text=True, timeout=600)


def _outcomes(path: Path) -> Path:
    rows = [json.loads(line)["text"] for line in EVAL.read_text().splitlines() if line.strip()][:24]
    path.write_text("".join(json.dumps({"text": t, "outcomes": {"small-chat": float(i % 3 == 0),
                                                                "frontier-large": 1.0}}) + "\n"
                            for i, t in enumerate(rows)))
    return path


@pytest.mark.parametrize("command", ["calibrate", "fit-quality"])
def test_a_derived_bundle_must_be_signed_anew(command: str, bundle_dir: Path, tmp_path: Path) -> None:
    priv, pub = keygen(tmp_path / "signing")
    src, out = tmp_path / "signed", tmp_path / "derived"
    shutil.copytree(bundle_dir, src)
    r = _cli("sign", str(src), "--key", str(priv))
    assert r.returncode == 0, r.stderr
    if command == "calibrate":
        r = _cli("calibrate", "--index", str(src), "--data", str(EVAL), "--out", str(out), "--no-confidence")
    else:
        r = _cli("fit-quality", "--index", str(src), "--outcomes", str(_outcomes(tmp_path / "o.jsonl")),
                 "--out", str(out), "--folds", "2")
    assert r.returncode == 0, r.stderr
    assert f"{src} was signed, {out} is a new version and is not: sign it with 'semroute sign {out}" in r.stdout
    assert not (out / SIGNATURE_FILE).exists()
    assert (src / SIGNATURE_FILE).exists()  # the source is never touched
    # refused at start, exit 3, saying what is missing
    r = _cli("serve", "--index", str(out), "--port", "0", "--trusted-key", str(pub))
    assert r.returncode == 3 and "bundle is not signed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # signed anew: served
    r = _cli("sign", str(out), "--key", str(priv))
    assert r.returncode == 0, r.stderr
    version = json.loads((out / "manifest.json").read_text())["version"]
    assert version in r.stdout
    proc, _port = start_subprocess(out, "--trusted-key", str(pub), "--no-watch")
    try:
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.communicate(timeout=60)  # drains and closes the pipes


def test_an_unsigned_source_derives_without_the_note(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "derived"
    r = _cli("calibrate", "--index", str(bundle_dir), "--data", str(EVAL), "--out", str(out), "--no-confidence")
    assert r.returncode == 0, r.stderr
    assert "semroute sign" not in r.stdout and not (out / SIGNATURE_FILE).exists()
