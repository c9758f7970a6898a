"""JSON Lines files read with ``file:line`` errors: the one reader behind labelled data (``labelled.py``) and
outcome data (``quality/outcomes.py``). Each caller checks its own keys; this reads lines and objects.

A line ends at "\\n" only (a "\\r" before it is dropped, so CRLF files read the same), as JSON Lines defines it.
``str.splitlines()`` would also end a line at U+2028, U+2029 and U+0085, which a JSON string may hold raw:
``json.dumps(..., ensure_ascii=False)`` writes them so (``audit_to_labelled`` does, from real queries), and such a
line would be cut in two and refused as invalid JSON, with the line numbers after it off from the editor's.

    >>> for line in read_jsonl(path, like='{"text": ..., "route": ...}').lines:
    ...     print(line.where, line.obj["text"])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import DataError


@dataclass(frozen=True)
class JsonLine:
    number: int  # 1-based, counting "\n"s as an editor does
    where: str  # "file:line", the prefix of every error about this line
    obj: dict[str, Any]


@dataclass(frozen=True)
class JsonLines:
    lines: list[JsonLine]  # blank lines skipped
    sha256: str  # of the file's bytes, as read


def read_jsonl(path: Path, *, like: str, utf8: Literal["strict", "replace"] = "strict") -> JsonLines:
    """Every non-blank line of ``path`` as a JSON object; a DataError ``file:line: ...`` for the first that is not.

    ``like`` is an example object for the error a non-object line gets. ``utf8="replace"`` reads bytes that are not
    UTF-8 as U+FFFD instead of refusing the file (labelled data has always been read so)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    try:
        text = raw.decode("utf-8", errors=utf8)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines: list[JsonLine] = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line.removesuffix("\r"))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object like {like}")
        lines.append(JsonLine(n, where, obj))
    return JsonLines(lines, hashlib.sha256(raw).hexdigest())
