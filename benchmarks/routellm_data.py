"""Convert RouteLLM's per-prompt outcome CSVs (../shared/data/routellm, see its README) to semroute's outcome JSONL.

    python -m benchmarks.routellm_data [--src DIR] [--out DIR]

Writes ``DIR/mmlu.jsonl``, ``DIR/gsm8k.jsonl`` and ``DIR/all.jsonl`` (default DIR: benchmarks/results/raw/routellm,
gitignored: ~10 MB of generated data is not committed). One line per prompt:

    {"text": "...", "outcomes": {"mixtral-8x7b-instruct": 1.0, "gpt-4-1106-preview": 0.0},
     "metadata": {"dataset": "mmlu", "subject": "anatomy"}}

MMLU repeats 27 questions within a subject, always with the same outcomes: the converter keeps the first copy (the
outcome loader refuses duplicates whose outcomes conflict, and a repeat in both a training and a test fold would
leak the answer).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

from ._common import REPO


def _default_src() -> Path:
    """``$SEMROUTE_ROUTELLM``, else ``shared/data/routellm`` beside the checkout (or beside its parent: worktrees)."""
    env = os.environ.get("SEMROUTE_ROUTELLM")
    if env:
        return Path(env)
    for base in REPO.parents:
        if (base / "shared" / "data" / "routellm").is_dir():
            return base / "shared" / "data" / "routellm"
    return REPO.parent / "shared" / "data" / "routellm"


SRC = _default_src()
OUT = REPO / "benchmarks" / "results" / "raw" / "routellm"
WEAK = "mixtral-8x7b-instruct"
STRONG = "gpt-4-1106-preview"
_COLUMNS = {"mistralai/Mixtral-8x7B-Instruct-v0.1": WEAK, "gpt-4-1106-preview": STRONG}


def _bool(value: str, where: str) -> float:
    if value not in ("True", "False"):
        raise ValueError(f"{where}: expected True or False, got {value!r}")
    return 1.0 if value == "True" else 0.0


def _read(path: Path, meta: dict[str, str]) -> list[dict[str, Any]]:
    csv.field_size_limit(1 << 24)  # GSM8K rows carry whole model responses
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, r in enumerate(csv.DictReader(f), start=2):
            outcomes = {name: _bool(r[col], f"{path}:{n}: {col}") for col, name in _COLUMNS.items()}
            rows.append({"text": r["prompt"], "outcomes": outcomes, "metadata": dict(meta)})
    return rows


def convert(src: Path = SRC, out: Path = OUT) -> dict[str, int]:
    """Write the JSONL files; returns the number of prompts per file."""
    mmlu: list[dict[str, Any]] = []
    for path in sorted((src / "mmlu").glob("mmlu_*.csv")):
        mmlu += _read(path, {"dataset": "mmlu", "subject": path.stem.removeprefix("mmlu_")})
    gsm8k = _read(src / "gsm8k_responses.csv", {"dataset": "gsm8k", "subject": "gsm8k"})
    seen: set[str] = set()
    counts = {}
    out.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list[dict[str, Any]]] = {"mmlu": [], "gsm8k": []}
    for name, rows in (("mmlu", mmlu), ("gsm8k", gsm8k)):
        for r in rows:
            if r["text"] in seen:
                continue
            seen.add(r["text"])
            kept[name].append(r)
    kept["all"] = kept["mmlu"] + kept["gsm8k"]
    for name, rows in kept.items():
        tmp = out / f".{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out / f"{name}.jsonl")
        counts[name] = len(rows)
    counts["mmlu_duplicates_dropped"] = len(mmlu) - len(kept["mmlu"])
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routellm_data", description=__doc__)
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument("--out", type=Path, default=OUT)
    ns = ap.parse_args(argv)
    counts = convert(ns.src, ns.out)
    print(f"wrote {ns.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
