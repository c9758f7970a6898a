"""The one JSON Lines reader behind labelled data and outcome data: lines end at "\\n" only, errors name file:line.

The separators str.splitlines() also honours (U+2028, U+2029, U+0085) are written raw by
json.dumps(..., ensure_ascii=False), which is how audit_to_labelled writes real queries; a line holding one must
read as one line, and the line numbers after it must match an editor's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semroute._jsonl import read_jsonl
from semroute.errors import DataError
from semroute.labelled import load_labelled
from semroute.quality.outcomes import load_outcomes

# line separators to str.splitlines(), and characters a JSON string may hold raw
SEPARATORS = ["\u2028", "\u2029", "\u0085"]


def _raw(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)


@pytest.mark.parametrize("sep", SEPARATORS)
def test_labelled_line_holding_a_unicode_separator_is_one_line(sep: str, tmp_path: Path) -> None:
    p = tmp_path / "l.jsonl"
    p.write_text(_raw({"text": f"first{sep}part", "route": "a"}) + "\r\n" + "\n"
                 + _raw({"text": "third line", "route": None}) + "\n{oops\n", encoding="utf-8")
    assert len(p.read_text(encoding="utf-8").splitlines()) == 5  # what splitlines() sees: line 1 cut in two
    with pytest.raises(DataError) as e:
        load_labelled(p)
    assert str(e.value).startswith(f"{p}:4: not valid JSON")  # line 4 as an editor counts it
    p.write_text(p.read_text(encoding="utf-8").replace("{oops\n", ""), encoding="utf-8")
    got = load_labelled(p)
    assert [(x.text, x.route) for x in got.examples] == [(f"first{sep}part", "a"), ("third line", None)]


def test_outcome_line_holding_raw_u2028_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "o.jsonl"
    p.write_text(_raw({"text": "a\u2028b", "outcomes": {"small": 1}}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"o\.jsonl:2: not valid JSON"):
        load_outcomes(p)
    p.write_text(_raw({"text": "a\u2028b", "outcomes": {"small": 1}}) + "\n", encoding="utf-8")
    assert load_outcomes(p).texts == ["a\u2028b"]


def test_reader_errors_and_hash(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\r\n\r\n  \n[1]\n')
    with pytest.raises(DataError, match=r"x\.jsonl:4: expected a JSON object like \{\"a\": \.\.\.\}"):
        read_jsonl(p, like='{"a": ...}')
    p.write_bytes(b'{"a": 1}\r\n\n{"b": "\xe9"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl: not UTF-8 text"):
        read_jsonl(p, like="{}")
    read = read_jsonl(p, like="{}", utf8="replace")  # labelled data's reading: U+FFFD for bad bytes
    assert [(x.number, x.where, x.obj) for x in read.lines] == [(1, f"{p}:1", {"a": 1}), (3, f"{p}:3", {"b": "\ufffd"})]
    assert read.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    with pytest.raises(DataError, match=r"missing\.jsonl: cannot read"):
        read_jsonl(tmp_path / "missing.jsonl", like="{}")
