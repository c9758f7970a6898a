"""Issue 16 through the CLI: duplicate YAML keys, stated limits, and malformed bundles (exit 3, one line)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from semroute.encoder import file_sha256

REPO = Path(__file__).resolve().parents[1]
BROKEN = REPO / "tests" / "data" / "broken"
HEADER = ("version: 1\nfallback: {model: big}\nmodels:\n  small: {cost_per_1k_input: 0.1}\n"
          "  big: {cost_per_1k_input: 1}\n")


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semroute.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def _one_line_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return r.stderr


@pytest.mark.parametrize(("name", "where"), [
    ("duplicate_key_threshold.yaml", ":11: routes[0].threshold: duplicate key"),
    ("duplicate_routes_key.yaml", ":12: routes: duplicate key"),
])
def test_duplicate_keys_are_refused_by_validate_and_build(name: str, where: str, tmp_path: Path) -> None:
    path = BROKEN / name
    assert f"{path}{where}" in _one_line_error(run("validate", str(path)), 2)
    assert f"{path}{where}" in _one_line_error(run("build-index", str(path), "--out", str(tmp_path / "b")), 2)
    assert not (tmp_path / "b").exists()


def test_bom_and_crlf_are_still_accepted(tmp_path: Path) -> None:
    text = HEADER + "routes:\n  - name: billing\n    model: small\n    threshold: 0.4\n    utterances: [refund]\n"
    p = tmp_path / "r.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    r = run("validate", str(p))
    assert r.returncode == 0 and r.stdout.startswith("ok: 1 routes"), r.stderr


def _routes_file(path: Path, n_routes: int, per_route: int, scorer: str | None = None) -> Path:
    lines = [HEADER]
    if scorer:
        lines.append(f"defaults: {{scorer: {scorer}}}\n")
    lines.append("routes:\n")
    for i in range(n_routes):
        utts = ", ".join(f"route {i} example {j}" for j in range(per_route))
        lines.append(f"  - {{name: r{i}, model: small, utterances: [{utts}]}}\n")
    path.write_text("".join(lines))
    return path


def test_twenty_thousand_routes_are_refused_at_the_limit_before_any_work(tmp_path: Path) -> None:
    p = _routes_file(tmp_path / "many.yaml", 20_000, 1)
    first_route_line = HEADER.count("\n") + 2
    err = _one_line_error(run("validate", str(p)), 2)
    assert f"{p}:{first_route_line + 1000}: routes[1000]: more than 1000 routes (the stated limit)" in err
    err = _one_line_error(run("build-index", str(p), "--out", str(tmp_path / "b")), 2)
    assert "more than 1000 routes" in err and not (tmp_path / "b").exists()


def test_head_fit_size_is_refused_before_allocating_and_knn_is_not(tmp_path: Path) -> None:
    # 1,000 routes x 21 utterances: 21,000 x 1,000 = 21M cells, past the logistic head's 20M
    p = _routes_file(tmp_path / "big.yaml", 1_000, 21)
    err = _one_line_error(run("validate", str(p)), 2)
    assert "defaults.scorer: the logistic head would be fitted over 21000 utterances x 1000 classes" in err
    assert "scorer: knn" in err
    r = run("validate", str(_routes_file(tmp_path / "knn.yaml", 1_000, 21, scorer="knn")))
    assert r.returncode == 0 and r.stdout.startswith("ok: 1000 routes, 21000 utterances"), r.stderr


def test_utterances_per_route_limit(tmp_path: Path) -> None:
    p = _routes_file(tmp_path / "fat.yaml", 1, 10_001)
    err = _one_line_error(run("validate", str(p)), 2)
    assert "routes[0].utterances: route 'r0' has 10001 utterances" in err and "limit is 10000" in err


def _damaged(bundle_dir: Path, tmp_path: Path, case: str) -> Path:
    out = tmp_path / case
    shutil.copytree(bundle_dir, out, copy_function=os.link)
    manifest = json.loads((out / "manifest.json").read_text())

    def replace(name: str, data: bytes, reseal: bool = True) -> None:
        (out / name).unlink()  # hard links to the shared bundle: never write through them
        (out / name).write_bytes(data)
        if reseal:
            manifest["files"][name] = file_sha256(out / name)

    if case == "manifest_list":
        replace("manifest.json", b"[]", reseal=False)
        return out
    if case == "files_list":
        manifest["files"] = []
    elif case == "encoder_string":
        manifest["encoder"] = "x"
    elif case == "no_encoder_dim":
        del manifest["encoder"]["dim"]
    elif case == "garbage_head":
        replace("head.npz", b"PK\x03\x04 this is not a zip file" * 10)
    elif case == "routes_wrong_shape":
        replace("routes.json", json.dumps({"routes": {"billing": 1}, "utterances": "x"}).encode())
    elif case == "manifest_flipped":
        data = (out / "manifest.json").read_bytes()
        replace("manifest.json", bytes([data[0] ^ 0xFF]) + data[1:], reseal=False)
        return out
    (out / "manifest.json").unlink()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize(("case", "reason"), [
    ("manifest_list", "not an object"),
    ("manifest_flipped", "corrupt manifest"),
    ("files_list", "malformed manifest (files:"),
    ("encoder_string", "malformed manifest (encoder:"),
    ("no_encoder_dim", "malformed manifest (encoder.dim: Field required)"),
    ("garbage_head", "head.npz: unreadable (BadZipFile"),
    ("routes_wrong_shape", "malformed route table"),
])
def test_malformed_bundle_serve_exits_3_with_one_line(case: str, reason: str, bundle_dir: Path,
                                                      tmp_path: Path) -> None:
    bundle = _damaged(bundle_dir, tmp_path, case)
    err = _one_line_error(run("serve", "--index", str(bundle), "--port", "0", timeout=120), 3)
    assert reason in err and "rebuild" in err, err
