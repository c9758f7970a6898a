"""Shared helpers: timing summaries, machine facts, data, result files."""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from semroute._fs import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
CLINC_SHARED = REPO.parent / "shared" / "data" / "clinc150" / "data_full.json"
CLINC_VENDORED = REPO / "benchmarks" / "data" / "clinc150" / "data_full.json.gz"


@dataclass(frozen=True)
class Mode:
    quick: bool
    index_sizes: tuple[int, ...] = ()  # the index suite's sizes to run (empty: all of the mode's)

    def n(self, quick: int, full: int) -> int:
        return quick if self.quick else full


def summary(samples_s: Sequence[float]) -> dict[str, float]:
    """Summary of latency samples given in seconds; reported in milliseconds."""
    xs = sorted(samples_s)
    n = len(xs)

    def pct(p: float) -> float:
        return xs[min(n - 1, round(p / 100 * (n - 1)))] * 1e3

    return {
        "median_ms": statistics.median(xs) * 1e3,
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "min_ms": xs[0] * 1e3,
        "max_ms": xs[-1] * 1e3,
        "n": n,
    }


def time_calls(fn: Callable[[], object], n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleave(
    fns: dict[str, Callable[[], object]], n: int, warmup: int = 2, block: int = 25
) -> dict[str, list[float]]:
    """Time several callables in alternating blocks, so a noisy neighbour hits them all alike.

    Blocks, not one call each in turn: this machine's L3 is 32 MB, the int8 encoder's layer weights ~11 MB and the
    fp32 one's ~42 MB, so alternating single calls made every int8 call start from caches the fp32 call had just
    flushed (measured: 2.3 ms per short query that way, 1.5 ms in blocks, 1.2 ms alone). A service runs one
    encoder, warm. Each block starts with ``warmup`` untimed calls and then times ``block`` calls.
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(v) < n for v in out.values()):
        for k, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(min(block, n - len(out[k]))):
                t = time.perf_counter()
                fn()
                out[k].append(time.perf_counter() - t)
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for pkg in ("semroute", "onnxruntime", "faiss-cpu", "grpcio", "tokenizers", "numpy", "torch",
                "sentence-transformers"):
        with contextlib.suppress(PackageNotFoundError):
            libs[pkg] = version(pkg)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libs,
        "loadavg_at_start": load,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def clinc_path() -> Path:
    """Where CLINC150 is read from: ``$SEMROUTE_CLINC150``, the shared data beside the checkout, or the vendored
    copy (benchmarks/data/clinc150/README.md), so a clone works wherever it is cloned."""
    env = os.environ.get("SEMROUTE_CLINC150")
    if env:
        return Path(env)
    return CLINC_SHARED if CLINC_SHARED.is_file() else CLINC_VENDORED


@functools.cache
def clinc() -> dict[str, list[list[str]]]:
    path = clinc_path()
    if not path.is_file():
        raise FileNotFoundError(f"CLINC150 not found at {path}: set SEMROUTE_CLINC150 to its data_full.json")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)  # type: ignore[no-any-return]


def queries(n: int, seed: int = 0) -> list[str]:
    data = clinc()
    pool = [t for t, _ in data["val"]] + [t for t, _ in data["oos_val"]]
    return random.Random(seed).sample(pool, n)


def clinc_routes_file(dest: Path) -> Path:
    """The 15,000-utterance route set: CLINC150 train, one route per intent."""
    import collections

    import yaml

    by: dict[str, list[str]] = collections.defaultdict(list)
    for t, i in clinc()["train"]:
        by[i].append(t)
    doc = {
        "version": 1,
        "fallback": {"model": "frontier"},
        "models": {"frontier": {"cost_per_1k_input": 2.5}, "small": {"cost_per_1k_input": 0.15}},
        "routes": [{"name": i.replace("_", "-"), "model": "small", "utterances": u} for i, u in sorted(by.items())],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(doc))
    return dest


def build(routes: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semroute.cli", "build-index", str(routes), "--out", str(out)],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def write_results(out: Path, name: str, data: object, render: Callable[[], str]) -> str:
    """Write OUT/NAME.json, then OUT/NAME.md from ``render()`` (atomic each), print and return the Markdown. The
    measurements go first: a table that fails to render must not lose them."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.json", (json.dumps(data, indent=1) + "\n").encode())
    md = render()
    atomic_write_bytes(out / f"{name}.md", md.encode())
    print(md)
    return md
