"""Atomic writes: the final name holds the old or the new content, never a partial one, with a normal file mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from semroute._fs import atomic_write_bytes


def test_atomic_write_replaces_content_with_a_plain_file_mode(tmp_path: Path) -> None:
    p = tmp_path / "results.json"
    p.write_bytes(b"old")
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600: other users may read results
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "results.json"
    p.write_bytes(b"old")

    with pytest.raises(TypeError):  # the write fails after the temporary file exists
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]
