"""Bundle reloads: on SIGHUP, and when the content of the bundle directory changes.

Every failure on this path is caught: a malformed bundle (BundleError) and anything else alike is logged once as
a ``reload_refused`` event, counted in ``semroute_reloads_total{result="refused"}``, and the previous bundle keeps
serving. The watcher cannot end while the server runs: each check is guarded, a check that fails is logged (at
most once a minute) and tried again at the next interval, and ``semroute_reload_watcher_last_check_timestamp_seconds``
shows that it is alive.

A bundle is keyed on its content: the sha256 of every file in the directory, the manifest included. A refused
bundle is not retried until that key changes, so a bundle repaired in place (say a truncated index.faiss copied
again, manifest unchanged) is picked up, while a broken one is not reloaded and logged every interval. Files are
rehashed only when their size, mtime or inode changes: an unchanged directory costs one stat per file per check.
"""

from __future__ import annotations

import asyncio
import calendar
import ctypes
import ctypes.util
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..encoder import file_sha256
from ..errors import SemrouteError
from ..router import Router
from .decode import RateLimitedLog
from .metrics import Metrics

log = logging.getLogger("semroute.server")


class DirectoryDigest:
    """The content key of a directory tree, recomputing only the hashes of files whose stat changed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._files: dict[str, tuple[tuple[int, int, int], str]] = {}

    def key(self) -> str | None:
        """sha256 over (relative path, file sha256) pairs; None if the directory is absent or mid-swap."""
        files: dict[str, tuple[tuple[int, int, int], str]] = {}
        try:
            if not self._path.is_dir():
                return None
            for p in sorted(self._path.rglob("*")):
                if not p.is_file():
                    continue
                st = p.stat()
                sig = (st.st_size, st.st_mtime_ns, st.st_ino)
                rel = p.relative_to(self._path).as_posix()
                known = self._files.get(rel)
                files[rel] = known if known is not None and known[0] == sig else (sig, file_sha256(p))
        except OSError:
            return None  # renamed aside or half-copied right now: look again next time
        self._files = files  # only what exists now, so the cache cannot grow with old file names
        h = hashlib.sha256()
        for rel, (_, digest) in files.items():
            h.update(f"{rel}\0{digest}\n".encode())
        return h.hexdigest()


def _created(router: Router) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(router.bundle.manifest.get("created")), "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, OverflowError):
        return None


def _trim_heap() -> None:
    """Give freed heap back to the OS after a bundle is dropped. glibc keeps freed memory in per-thread arenas;
    a reload builds the new encoder session on a worker thread, so without a trim RSS kept the old bundle's
    pages (see docs/operations.md, memory)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


class RouterHolder:
    """The router now serving. Reloads build a new Router beside the old one and swap the reference; batches
    already running keep the router they started with."""

    def __init__(self, router: Router, path: Path, threads: int, metrics: Metrics,
                 load: Callable[[Path, int], Router] | None = None) -> None:
        self.current = router
        self._load_router = load or (lambda p, t: Router.load(p, threads=t))  # ops: signature checked first
        self._path = path
        self._threads = threads
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._digest = DirectoryDigest(path)
        self._serving: str | None = None  # content key of the bundle now serving (None: not known)
        self._refused: str | None = None  # content key of the last refused bundle, so it is not retried
        metrics.set_bundle(router.version, _created(router))

    async def start(self) -> None:
        """Key the bundle loaded at start, so the watcher knows what is serving."""
        async with self._lock:
            self._serving = await asyncio.to_thread(self._digest.key)

    async def reload(self, *, reason: str) -> bool:
        """Load the bundle on disk now (SIGHUP). Never raises: a failure is logged, counted and survived."""
        async with self._lock:
            key = await asyncio.to_thread(self._digest.key)
            return await self._load(reason, key)

    async def check(self) -> bool:
        """Reload if the directory's content changed since the bundle serving now (or the last refusal)."""
        async with self._lock:
            key = await asyncio.to_thread(self._digest.key)
            if key is None or key in (self._serving, self._refused):
                return False
            return await self._load("bundle changed on disk", key)

    async def _load(self, reason: str, key: str | None) -> bool:
        try:
            new = await asyncio.to_thread(self._load_router, self._path, self._threads)
        except Exception as e:  # whatever it was, the old bundle keeps serving and the watcher keeps watching
            self._refused = key
            self._metrics.reloads.labels("refused").inc()
            bug = not isinstance(e, SemrouteError)  # a bundle error is one line; anything else gets its traceback
            log.error("reload (%s) refused, still serving %s: %s", reason, self.current.version,
                      f"{type(e).__name__}: {e}" if bug else e, exc_info=bug,
                      extra={"event": "reload_refused", "trigger": reason, "serving": self.current.version})
            return False
        after = await asyncio.to_thread(self._digest.key)
        old = self.current.version
        self.current = new
        # if the directory changed while it loaded, what serves is not what is there now: look again next check
        self._serving = key if key == after else None
        self._refused = None
        self._metrics.reloads.labels("ok").inc()
        self._metrics.set_bundle(new.version, _created(new))
        log.warning("reloaded (%s): %s -> %s", reason, old, new.version,
                    extra={"event": "reloaded", "trigger": reason, "from": old, "serving": new.version})
        await asyncio.sleep(0)  # let batches still holding the old router finish before the trim
        _trim_heap()
        return True


async def watch(holder: RouterHolder, interval: float, metrics: Metrics) -> None:
    """Check the bundle directory every ``interval`` seconds until cancelled; no error ends it."""
    errors = RateLimitedLog()
    metrics.watcher_up.set(1)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await holder.check()
            except Exception as e:  # a bug in the check itself (reload failures never get here)
                errors.warn(f"bundle check failed, will retry: {type(e).__name__}: {e}", event="watch_error")
            metrics.watcher_checked.set(time.time())
    finally:
        metrics.watcher_up.set(0)
