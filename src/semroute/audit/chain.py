"""The audit record format and its hash chain.

Each line is one JSON object in canonical form (sorted keys, no spaces, UTF-8). ``seq`` counts records from 0
across every file of one log; ``prev`` is the ``hash`` of the record before (64 zeros for seq 0); ``hash`` is the
sha256 of the record's canonical JSON without its own ``hash``. Editing a record breaks its own hash; recomputing
that hash breaks the next record's ``prev``; removing or reordering records breaks ``seq`` and ``prev``. Only the
newest record can be rewritten undetected by someone who also recomputes its hash: anchor the head (the server
logs it at every rotation and at shutdown; ``verify --expect-head``) somewhere the log's writer cannot reach.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64
FORMAT = 1


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    """The hash of ``record`` as stored (its ``hash`` field, if any, left out)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal(record: dict[str, Any], seq: int, prev: str) -> tuple[bytes, str]:
    """Give ``record`` its place in the chain; returns (the line to append, its hash)."""
    record["seq"] = seq
    record["prev"] = prev
    record.pop("hash", None)
    h = record_hash(record)
    record["hash"] = h
    return canonical(record) + b"\n", h
