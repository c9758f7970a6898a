"""Run a real semroute server on 127.0.0.1 for tests: in-process (a thread with its own event loop) or as a
``semroute serve`` subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semroute.server import ServeConfig, serve


class InProcessServer:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()

            def ready(port: int, version: str) -> None:
                self.port = port
                self._ready.set()

            await serve(self.config, ready=ready, stop=self._stop)

        try:
            self._loop.run_until_complete(main())
        except BaseException as e:
            self._error = e
            self._ready.set()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        if not self._ready.wait(120):
            raise TimeoutError("server did not become ready")
        if self._error:
            raise self._error
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def start_subprocess(bundle: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    """Start ``semroute serve --port 0`` and return (process, port) once it prints its serving line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "semroute.cli", "serve", "--index", str(bundle), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"serving bundle \S+ on 127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read()}")


def health_status(target: str, timeout: float = 1.0) -> int | None:
    with grpc.insecure_channel(target) as ch:
        try:
            return int(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status)
        except grpc.RpcError:
            return None
