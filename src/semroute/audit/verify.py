"""``semroute audit verify LOG...``: check a hash-chained audit log and name the first record that was edited,
removed or reordered.

    >>> summary = verify_logs([Path("audit.log.000000000000"), Path("audit.log")])
    >>> summary.records, summary.head

Files may be given in any order (they are ordered by their first record's seq). Unless ``partial``, the chain
must start at seq 0, so removing the oldest records (or a whole early file) is caught too.

A hash chain cannot show that its newest records were cut off (what is left is still a valid chain), so the head
(the newest record's hash: ``semroute audit head LOG...``, or the server's ``audit_head`` log events at rotation
and shutdown) is anchored somewhere the log's writer cannot reach, and checked later: ``expect_head`` (the log
must end exactly there: a log that is no longer written) or ``anchors`` (each must still be in the chain: a log
that kept growing since; truncation to before an anchor is caught).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .chain import GENESIS, record_hash


@dataclass(frozen=True)
class Summary:
    records: int
    first_seq: int
    last_seq: int
    head: str
    files: int
    gaps: int  # gap records: decisions the server declared unrecorded (disk full, queue full)
    lost: int


@dataclass(frozen=True)
class _Rec:
    where: str
    body: dict[str, Any]


def _read(path: Path) -> list[_Rec]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not raw:
        return []
    lines = raw.split(b"\n")
    if lines[-1]:
        raise DataError(f"{path}:{len(lines)}: truncated record (the file ends mid-record, no newline); the log was "
                        "cut short or is still being written")
    out = []
    for n, line in enumerate(lines[:-1], start=1):
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise DataError(f"{where}: corrupt record (not JSON: {e}); the line was edited or damaged") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("seq"), int) or not isinstance(rec.get("hash"), str) \
                or not isinstance(rec.get("prev"), str):
            raise DataError(f"{where}: not an audit record (needs integer 'seq', 'prev' and 'hash')")
        out.append(_Rec(where, rec))
    return out


def check_hash(value: str, field: str) -> str:
    """A record hash as given on the command line: 64 hex digits (lowercased)."""
    h = value.strip().lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ConfigError(f"{value[:80]!r} is not a record hash", field=field,
                          hint="give the 64 hex digits that 'semroute audit head LOG...' prints")
    return h


def verify_logs(paths: list[Path], *, partial: bool = False, expect_head: str | None = None,
                anchors: Sequence[str] = ()) -> Summary:
    """Raise DataError naming the first broken record; return a Summary when the chain holds (and ends at
    ``expect_head``, and holds every hash of ``anchors``, when given)."""
    if expect_head is not None:
        expect_head = check_hash(expect_head, "--expect-head")
    anchors = [check_hash(a, "--anchor") for a in anchors]
    if not paths:
        raise DataError("no audit log files given")
    per_file = [(p, _read(p)) for p in paths]
    per_file = [(p, recs) for p, recs in per_file if recs]
    if not per_file:
        raise DataError(f"{', '.join(map(str, paths))}: no audit records")
    per_file.sort(key=lambda pr: pr[1][0].body["seq"])
    records = [r for _, recs in per_file for r in recs]
    first = records[0]
    if not partial and (first.body["seq"] != 0 or first.body["prev"] != GENESIS):
        raise DataError(f"{first.where}: the log starts at seq {first.body['seq']}, not 0: earlier records or files "
                        "were removed (or pass every file of the log; --partial accepts a later start)")
    expected_seq, expected_prev = first.body["seq"], first.body["prev"]
    gaps = lost = 0
    later = {r.body["seq"] for r in records}
    prev_rec: _Rec | None = None
    for r in records:
        b = r.body
        if record_hash(b) != b["hash"]:
            raise DataError(f"{r.where}: record seq {b['seq']} was edited (its content does not match its hash)")
        if b["seq"] > expected_seq and expected_seq in later:
            raise DataError(f"{r.where}: record seq {b['seq']} comes before seq {expected_seq}: records were reordered")
        if b["seq"] > expected_seq:
            missing = (f"seq {expected_seq}" if b["seq"] == expected_seq + 1
                       else f"seqs {expected_seq}..{b['seq'] - 1}")
            raise DataError(f"{r.where}: record seq {b['seq']} follows seq {expected_seq - 1}: {missing} removed")
        if b["seq"] < expected_seq:
            raise DataError(f"{r.where}: record seq {b['seq']} comes after seq {expected_seq - 1}: records were "
                            "reordered or duplicated")
        if b["prev"] != expected_prev:
            assert prev_rec is not None  # the first record defines expected_prev
            raise DataError(f"{prev_rec.where}: record seq {prev_rec.body['seq']} was edited or replaced (the next "
                            f"record, seq {b['seq']}, does not link to it)")
        if b.get("kind") == "gap":
            gaps += 1
            lost += int(b.get("lost", 0))
        expected_seq, expected_prev, prev_rec = b["seq"] + 1, b["hash"], r
    last = records[-1].body
    seq_of = {r.body["hash"]: r.body["seq"] for r in records}
    if expect_head is not None and last["hash"] != expect_head:
        if expect_head in seq_of:
            raise DataError(f"{records[-1].where}: the log continues past the expected head {expect_head[:16]}... "
                            f"(record seq {seq_of[expect_head]}): {last['seq'] - seq_of[expect_head]} newer records "
                            f"follow it, up to seq {last['seq']}; if the head was taken before they were written, "
                            "check it with --anchor, which requires only that it is still in the chain")
        raise DataError(f"{records[-1].where}: the newest record (seq {last['seq']}) has hash {last['hash'][:16]}..., "
                        f"not the expected head {expect_head[:16]}..., which is nowhere in the chain: the newest "
                        "records were removed (truncated) or rewritten, or the head belongs to another log")
    for a in anchors:
        if a not in seq_of:
            raise DataError(f"{records[-1].where}: the anchored record {a[:16]}... is not in the chain (seq "
                            f"{first.body['seq']}..{last['seq']}): the log was cut back to before it, or rewritten, "
                            "or the anchor belongs to another log (or to files not given here)")
    return Summary(len(records), first.body["seq"], last["seq"], last["hash"], len(per_file), gaps, lost)


def read_records(paths: list[Path]) -> list[dict[str, Any]]:
    """Every record of ``paths`` in chain order (after verifying the chain, partial starts allowed)."""
    verify_logs(paths, partial=True)
    per_file = sorted((recs for recs in (_read(p) for p in paths) if recs), key=lambda rs: rs[0].body["seq"])
    return [r.body for recs in per_file for r in recs]
