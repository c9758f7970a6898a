"""The outcome file loader: what it accepts, and file:line errors (exit code 2) for what it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from semroute.errors import DataError, exit_code
from semroute.quality.outcomes import load_outcomes

MODELS = {"small", "big"}


def _write(tmp_path: Path, lines: list[object]) -> Path:
    p = tmp_path / "o.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_loads_scores_missing_and_identical_duplicates(tmp_path: Path) -> None:
    p = _write(tmp_path, [
        {"text": "a", "outcomes": {"small": 1.0, "big": True}},
        "",
        {"text": "b", "outcomes": {"big": 0.25}, "route": "math", "metadata": {"dataset": "x"}},
        {"text": " a ", "outcomes": {"small": 1.0, "big": 1.0}},  # same text, same outcomes: kept once
    ])
    o = load_outcomes(p, known_models=MODELS)
    assert o.texts == ["a", "b"] and o.models == ["big", "small"]
    assert o.column("big").tolist() == [1.0, 0.25]
    assert o.column("small")[0] == 1.0 and math.isnan(o.column("small")[1])  # missing: unknown, not wrong
    assert o.duplicates == 1 and o.lines == [1, 3] and o.routes == [None, "math"]
    assert any("missing" in n for n in o.notes)


@pytest.mark.parametrize(("lines", "message"), [
    ([{"text": "a", "outcomes": {"smal": 1.0}}], "o.jsonl:1: outcomes: unknown model 'smal'"),
    ([{"text": "a", "outcomes": {"small": 1.5}}], "o.jsonl:1: outcomes.small: score 1.5 is outside [0, 1]"),
    ([{"text": "a", "outcomes": {"small": -0.1}}], "outside [0, 1]"),
    ([{"text": "a", "outcomes": {"small": "yes"}}], "o.jsonl:1: outcomes.small: score must be a number"),
    ([{"text": "a", "outcomes": {"small": 1}}, {"text": "b", "outcomes": {}}],
     "o.jsonl:2: outcomes: must be a non-empty"),
    ([{"text": "a", "outcomes": {"small": 1}}, {"text": "a", "outcomes": {"small": 0}}],
     "o.jsonl:2: this text repeats line 1 with different outcomes"),
    ([{"text": "", "outcomes": {"small": 1}}], "o.jsonl:1: text: must be a non-empty string"),
    (["{not json"], "o.jsonl:1: not valid JSON"),
    ([{"text": "a", "outcomes": {"small": 1}, "label": 1}], "o.jsonl:1: unknown key(s) ['label']"),
    ([{"text": "a", "outcomes": {"small": 1}, "metadata": {"k": 1}}], "metadata: must be an object of string"),
    ([""], "no outcome lines"),
    ([{"text": "a\u2028b", "outcomes": {"small": 1}}, "{oops"], "o.jsonl:2: not valid JSON"),  # U+2028 is no line end
])
def test_bad_lines_name_file_and_line(tmp_path: Path, lines: list[object], message: str) -> None:
    p = _write(tmp_path, lines)
    with pytest.raises(DataError) as e:
        load_outcomes(p, known_models=MODELS)
    assert message in str(e.value)
    assert exit_code(e.value) == 2


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no outcome lines"):
        load_outcomes(p)
