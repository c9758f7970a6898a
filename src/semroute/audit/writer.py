"""AuditWriter: appends hash-chained records to a JSON-lines file from its own thread.

    writer = AuditWriter(Path("audit/audit.log"), text_mode="hmac", key=load_or_create_key(...))
    writer.start()
    writer.submit({"kind": "decision", ...}, text="the query")   # never blocks; False when the queue is full
    writer.close()

Why a thread and a bounded queue: the event loop only builds a small dict and puts it on the queue; hashing,
the HMAC of the text, JSON and the write happen on the writer thread, so a slow or full disk never stalls
requests. Records reach the kernel with every write (a crash of the process loses nothing written); fsync runs
at rotation, at shutdown and after a second without records.

Failures (disk full, I/O errors, a full queue) are never silent. The log stays consistent: a failed write is cut
back to the last whole record, and when writing works again the first record is a ``gap`` record saying how many
decisions went unrecorded and why. What the server does meanwhile is the operator's declared choice
(``--audit-on-error``): ``keep-serving`` (the default: answer, count ``semroute_audit_lost_total``, log an error
at most every 30 s, ``semroute_audit_healthy`` 0) or ``fail-closed`` (answer UNAVAILABLE while the trail is
broken). keep-serving is the default because the router stands in front of all LLM traffic: a full audit disk
should page someone, not stop the product; operators for whom an unrecorded decision is worse than an outage
choose fail-closed.

Rotation: past ``max_bytes`` the file is renamed to ``<name>.<first seq, 12 digits>`` and a new file begins; the
chain runs on across files. Rotated files are never deleted here (ship or prune them outside).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .chain import FORMAT, GENESIS, record_hash, seal

log = logging.getLogger("semroute.audit")
_TAIL = 1 << 20  # bytes read back at start to find the last record (records are at most ~60 KB)
_ERROR_LOG_EVERY_S = 30.0
_STOP = object()


def rotated_files(path: Path) -> list[Path]:
    pattern = re.compile(re.escape(path.name) + r"\.\d{12}$")
    return sorted(p for p in path.parent.glob(path.name + ".*") if pattern.match(p.name))


def load_or_create_key(path: Path, *, create: bool) -> bytes:
    """The HMAC key for query texts. Created (32 random bytes, mode 0600) only when ``create``."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise ConfigError("no such key file", file=path, field="--audit-key",
                              hint="give an existing file of at least 16 random bytes, or omit the flag to have "
                                   "one created beside the log") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        log.warning("created audit HMAC key %s (keep it: it is what lets you match a text to its record)", path)
        return key
    except OSError as e:
        raise ConfigError(f"cannot read ({e.strerror})", file=path, field="--audit-key") from None
    if len(key) < 16:
        raise ConfigError(f"holds {len(key)} bytes; an HMAC key needs at least 16", file=path, field="--audit-key",
                          hint="head -c 32 /dev/urandom > KEYFILE")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class AuditWriter:
    def __init__(
        self,
        path: Path,
        *,
        text_mode: str = "hmac",
        key: bytes | None = None,
        max_bytes: int = 100 * 1024 * 1024,
        on_error: str = "keep-serving",
        queue_size: int = 10_000,
        registry: Any = None,
    ) -> None:
        if text_mode == "hmac" and key is None:
            raise ValueError("text_mode 'hmac' needs a key")
        self.path = path
        self.text_mode = text_mode
        self._key = key
        self._key_id = key_id(key) if key is not None else None
        self.max_bytes = max_bytes
        self.fail_closed = on_error == "fail-closed"
        self.on_error = on_error
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._size = 0
        self._first_seq = 0  # seq of the first record in the active file (names it when rotated)
        self.seq = 0  # the next record's seq
        self.head = GENESIS  # hash of the last record written
        self.healthy = True
        self._overflow = 0  # records refused because the queue was full (counted on the event loop)
        self._overflow_seen = 0
        self._lost_pending = 0  # records lost and not yet declared in a gap record
        self._lost_reason = ""
        self._last_error_log = 0.0
        self._dirty = False
        self._metrics = _metrics(registry)

    # --- on the caller's thread ----------------------------------------------------------------------------

    def start(self, **start_fields: Any) -> None:
        """Find where the chain ends (repairing a torn last line), open the file, start the thread. Raises
        DataError if the newest record is corrupt: appending to a broken chain would hide the break."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dropped = self._recover()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size
        if self._size == 0:
            self._first_seq = self.seq
        self._thread = threading.Thread(target=self._work, name="semroute-audit", daemon=True)
        self._thread.start()
        start = {"kind": "start", "format": FORMAT, "pid": os.getpid(), "text": self.text_mode,
                 "text_key": self._key_id, "on_error": self.on_error, **start_fields}
        if dropped:
            start["repaired_torn_bytes"] = dropped
        self.submit(start)

    def submit(self, record: dict[str, Any], text: str | None = None) -> bool:
        """Queue one record (``text``: the query, stored per ``text_mode``). Never blocks; False if the queue is
        full (the record is lost and declared in the log's next gap record)."""
        record.setdefault("time", time.time())
        try:
            self._queue.put_nowait((record, text))
            return True
        except queue.Full:
            self._overflow += 1
            return False

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        log.warning("audit log closed at seq %d, head %s", self.seq - 1, self.head,
                    extra={"event": "audit_head", "seq": self.seq - 1, "head": self.head})

    # --- recovery ------------------------------------------------------------------------------------------

    def _recover(self) -> int:
        files = [p for p in (*rotated_files(self.path), self.path) if p.exists() and p.stat().st_size > 0]
        if not files:
            return 0
        last = files[-1]
        dropped = 0
        with last.open("rb+") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
            if not tail.endswith(b"\n"):  # the process died mid-write: cut the torn line, say so in the log
                cut = tail.rfind(b"\n") + 1
                dropped = len(tail) - cut
                f.truncate(size - dropped)
                tail = tail[:cut]
                log.error("audit log %s ended in a torn record (%d bytes); cut it and noted it in the log",
                          last, dropped)
            if last == self.path:
                f.seek(0)
                first = f.readline()
        lines = tail.splitlines()
        if not lines:
            return dropped
        try:
            rec = json.loads(lines[-1])
            ok = rec.get("hash") == record_hash(rec)
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise DataError(f"{last}: the newest audit record is corrupt, so the chain cannot be continued; run "
                            f"'semroute audit verify {last.parent}/{self.path.name}*', then move the log aside to "
                            "start a new chain")
        self.seq, self.head = int(rec["seq"]) + 1, str(rec["hash"])
        if last == self.path:
            try:
                self._first_seq = int(json.loads(first)["seq"])
            except (ValueError, KeyError, TypeError):
                self._first_seq = self.seq
        return dropped

    # --- the writer thread ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self.healthy or self._overflow != self._overflow_seen:
                    self._write([])  # retry: declares the gap once the disk takes writes again
                elif self._dirty:
                    with contextlib.suppress(OSError):
                        os.fsync(self._fd)
                    self._dirty = False
                continue
            if item is _STOP:
                if self._overflow != self._overflow_seen or self._lost_pending:
                    self._write([])
                return
            items = [item]
            stop = False
            while len(items) < 512:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._write(items)
            if stop:
                self._queue.put(_STOP)

    def _prepare(self, record: dict[str, Any], text: str | None) -> dict[str, Any]:
        record["time"] = _iso(record["time"])
        if text is not None:
            if self.text_mode == "full":
                record["text"] = text
            elif self.text_mode == "hmac":
                assert self._key is not None
                record["text_hmac"] = hmac.new(self._key, text.encode("utf-8", "surrogatepass"),
                                               hashlib.sha256).hexdigest()
                record["text_key"] = self._key_id
        return record

    def _write(self, items: list[tuple[dict[str, Any], str | None]]) -> None:
        try:
            self._append(items)
        except Exception as e:  # a bug (a record that is not JSON): the thread must survive it, and say so
            log.exception("audit records could not be written")
            self._lost_pending += len(items)
            self._lost_reason = f"internal error: {type(e).__name__}"
            self._unhealthy(OSError(0, str(e)))

    def _append(self, items: list[tuple[dict[str, Any], str | None]]) -> None:
        overflow = self._overflow - self._overflow_seen
        records = []
        lost = self._lost_pending + overflow
        if lost:
            reasons = [r for r in (self._lost_reason, "queue full" if overflow else "") if r]
            records.append({"kind": "gap", "lost": lost, "reason": "; ".join(reasons), "time": _iso(time.time())})
        records += [self._prepare(dict(r), t) for r, t in items]
        if not records:
            return
        start, seq, head, sealed = self.seq, self.seq, self.head, []
        for r in records:
            line, head = seal(r, seq, head)
            seq += 1
            sealed.append((line, seq, head))
        try:
            self._write_lines(sealed)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # never leave half a record behind
            written = self.seq - start  # whole chunks that made it before the error (the gap record first)
            gap = 1 if lost else 0
            unwritten = len(items) - max(0, written - gap)
            self._overflow_seen += overflow
            self._lost_pending = unwritten if written >= gap and gap else lost + unwritten
            self._lost_reason = e.strerror or str(e)
            self._metrics["lost"].inc(unwritten + overflow)
            self._unhealthy(e)
            return
        self._dirty = True
        self._overflow_seen += overflow
        if overflow:
            self._metrics["lost"].inc(overflow)
        if lost and not self.healthy:
            log.warning("audit log writing again after losing %d records (declared in a gap record)", lost)
        self._lost_pending, self._lost_reason = 0, ""
        self.healthy = True
        self._metrics["healthy"].set(1)
        self._metrics["records"].inc(len(items))

    def _write_lines(self, sealed: list[tuple[bytes, int, str]]) -> None:
        """Append whole lines, rotating between two lines whenever the next one would pass max_bytes. Each chunk
        written moves the chain's state (seq, head) forward; on error the active file is cut back to its last
        whole line and the chunks already written stay (they are complete records)."""
        chunk: list[tuple[bytes, int, str]] = []
        pending = 0
        for item in sealed:
            line = item[0]
            if (chunk and self._size + pending + len(line) > self.max_bytes) or (
                    not chunk and self._size and self._size + len(line) > self.max_bytes):
                if chunk:
                    self._flush(chunk, pending)
                    chunk, pending = [], 0
                self._rotate()
            chunk.append(item)
            pending += len(line)
        if chunk:
            self._flush(chunk, pending)

    def _flush(self, chunk: list[tuple[bytes, int, str]], size: int) -> None:
        n = os.write(self._fd, b"".join(line for line, _, _ in chunk))
        if n != size:
            raise OSError(28, f"short write ({n} of {size} bytes)")
        self._size += size
        _, self.seq, self.head = chunk[-1]

    def _unhealthy(self, e: OSError) -> None:
        self.healthy = False
        self._metrics["healthy"].set(0)
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            what = ("answering UNAVAILABLE until it works again (--audit-on-error fail-closed)" if self.fail_closed
                    else "still serving, decisions unrecorded (--audit-on-error keep-serving)")
            log.error("audit log %s cannot be written (%s): %s; %d records lost so far", self.path, e, what,
                      self._lost_pending, extra={"event": "audit_error", "lost": self._lost_pending})

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        dest = self.path.with_name(f"{self.path.name}.{self._first_seq:012d}")
        os.replace(self.path, dest)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = 0
        self._first_seq = self.seq
        log.warning("audit log rotated to %s at seq %d, head %s", dest, self.seq - 1, self.head,
                    extra={"event": "audit_head", "seq": self.seq - 1, "head": self.head})


def _metrics(registry: Any) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, Counter, Gauge

    r = registry if registry is not None else CollectorRegistry()
    healthy = Gauge("semroute_audit_healthy", "1 while audit records are being written, 0 after a failed write",
                    registry=r)
    healthy.set(1)
    return {
        "records": Counter("semroute_audit_records_total", "Audit records written", registry=r),
        "lost": Counter("semroute_audit_lost_total", "Audit records lost (write failed or queue full)", registry=r),
        "healthy": healthy,
    }
