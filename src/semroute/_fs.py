"""Atomic filesystem writes: nothing half-written is ever visible under the final name."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_dir_beside(dest: Path) -> Path:
    """A fresh directory on the same filesystem as ``dest``, so the final rename is atomic."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; a bundle is read by whatever user serves it
    return tmp


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished directory into place. An existing ``dest`` is renamed aside first, then removed, so at
    every instant ``dest`` is either the complete old or the complete new directory (or, for a moment between
    two renames, absent; readers retry)."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
