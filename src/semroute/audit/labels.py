"""From the audit trail back to calibration: audit records (written with ``--audit-text full``) joined on
``request_id`` with labels or reported outcomes become labelled JSONL for ``semroute calibrate --data``.

Labels file (JSONL), one per line, either form:

    {"request_id": "r-17", "route": "billing"}      the route this query should have gone to (null: fallback)
    {"request_id": "r-18", "outcome": "correct"}    the decision was right: its route (or fallback) is the label
    {"request_id": "r-19", "outcome": "wrong"}      the decision was wrong; with no route given it says nothing
                                                    about the right one, so it is skipped (and counted)

    semroute audit to-labelled audit.log* --labels labels.jsonl --out val.jsonl
    semroute calibrate --index bundle --data val.jsonl --out bundle-v2
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes
from ..errors import DataError
from .verify import read_records

_OUTCOMES = {"correct", "wrong"}


def _labels(path: Path) -> dict[str, dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DataError(f"{where}: not valid JSON ({e}); each line is one JSON object") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("request_id"), str) or not obj["request_id"]:
            raise DataError(f"{where}: needs a non-empty 'request_id' (the id the caller sent with the query)")
        extra = set(obj) - {"request_id", "route", "outcome"}
        if extra:
            raise DataError(f"{where}: unknown key(s) {sorted(extra)}; use 'route' or 'outcome'")
        if ("route" in obj) == ("outcome" in obj):
            raise DataError(f"{where}: give exactly one of 'route' (name or null) or 'outcome' (correct|wrong)")
        if "outcome" in obj and obj["outcome"] not in _OUTCOMES:
            raise DataError(f"{where}: 'outcome' must be 'correct' or 'wrong', got {obj['outcome']!r}")
        if "route" in obj and obj["route"] is not None and not isinstance(obj["route"], str):
            raise DataError(f"{where}: 'route' must be a route name or null")
        if obj["request_id"] in out:
            raise DataError(f"{where}: request_id {obj['request_id']!r} is labelled twice")
        out[obj["request_id"]] = obj
    return out


def audit_to_labelled(logs: list[Path], labels_path: Path, out: Path) -> dict[str, int]:
    """Write labelled JSONL to ``out`` (atomically); returns counts of what was joined and skipped."""
    labels = _labels(labels_path)
    counts: Counter[str] = Counter()
    rows = []
    seen: set[str] = set()
    for rec in read_records(logs):
        if rec.get("kind") != "decision":
            continue
        rid = rec.get("request_id") or ""
        lab = labels.get(rid)
        if lab is None:
            counts["unlabelled"] += 1
            continue
        if rid in seen:
            counts["duplicate_request_id"] += 1
            continue
        if "text" not in rec:
            raise DataError(f"audit record seq {rec['seq']} (request_id {rid!r}) holds no query text: the server wrote "
                            f"it with --audit-text {'hmac' if 'text_hmac' in rec else 'none'}; serve with "
                            "--audit-text full to calibrate from the audit trail")
        if "route" in lab:
            route = lab["route"]
        elif lab["outcome"] == "correct":
            route = rec.get("route")
        else:
            counts["wrong_without_route"] += 1
            continue
        seen.add(rid)
        rows.append(json.dumps({"text": rec["text"], "route": route}, ensure_ascii=False))
        counts["joined"] += 1
    counts["labels_without_record"] = len(set(labels) - seen) - counts["wrong_without_route"]
    if not rows:
        raise DataError(f"no audit record matched a label in {labels_path} (request ids must match the ones the "
                        "callers sent in RequestMetadata.request_id)")
    atomic_write_bytes(out, ("\n".join(rows) + "\n").encode())
    return dict(counts)
