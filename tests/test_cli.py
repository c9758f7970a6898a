"""The CLI end to end in subprocesses, as a user runs it: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semroute.cli", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_validate_ok() -> None:
    r = run("validate", str(REPO / "routes"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ")


def test_validate_error_is_one_line_with_location() -> None:
    bad = REPO / "tests" / "data" / "broken" / "threshold_out_of_range.yaml"
    r = run("validate", str(bad))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"{bad}:10: routes[0].threshold:" in r.stderr


def test_build_index_invalid_routes_writes_nothing(tmp_path: Path) -> None:
    bad = REPO / "tests" / "data" / "broken" / "undeclared_model.yaml"
    r = run("build-index", str(bad), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "not declared" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def built(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "bundle"
    r = run("build-index", str(REPO / "routes"), "--out", str(out), "--encoder", str(encoder_dir))
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    return out


def test_route_json(built: Path) -> None:
    r = run("route", "--index", str(built), "--json", "write a python function that parses a CSV file",
            "asdkjh qwe zzz")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 2
    for d in lines:
        assert {"route", "model", "score", "threshold", "fallback", "reason", "scores"} <= d.keys()
        assert isinstance(d["fallback"], bool)
        assert all({"route", "score"} == s.keys() for s in d["scores"])
    assert lines[0]["route"] is not None and not lines[0]["fallback"]
    assert lines[1]["fallback"] and lines[1]["route"] is None


def test_route_human_and_stdin(built: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "semroute.cli", "route", "--index", str(built)],
        input="translate good morning into Spanish\n", capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "->" in r.stdout and "reason=" in r.stdout


def test_route_missing_bundle_exit_code(tmp_path: Path) -> None:
    r = run("route", "--index", str(tmp_path / "none"), "hello")
    assert r.returncode == 3 and "build-index" in r.stderr and "Traceback" not in r.stderr


def test_route_empty_text(built: Path) -> None:
    r = run("route", "--index", str(built), "   ")
    assert r.returncode == 2 and "text" in r.stderr
