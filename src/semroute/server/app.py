"""Server lifecycle: load and warm, then bind, then SERVING; reload on SIGHUP or a new bundle; drain on SIGTERM.

    config = ServeConfig(index=Path("bundle"))
    asyncio.run(serve(config))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from .._proto.semroute.v1 import router_pb2 as pb
from .._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from ..errors import SemrouteError
from ..ops.config import OpsConfig
from ..router import Router
from .batcher import MicroBatcher
from .metrics import Metrics
from .service import Limits, RouterService

log = logging.getLogger("semroute.server")
_DRAIN_QUIET_S = 0.25  # how long no RPC must be in flight before the port closes
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Router"].full_name


@dataclass(frozen=True)
class ServeConfig:
    index: Path
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 0  # 0: no /metrics endpoint
    threads: int = 1
    max_batch_size: int = 32
    max_wait_us: int = 0
    max_queue: int = 1024
    max_text_chars: int = 10_000
    max_batch_queries: int = 256
    grace_period: float = 10.0
    watch: bool = True
    watch_interval: float = 2.0
    ops: OpsConfig | None = None  # keys, TLS, rate limits, audit, tracing, signed bundles


class RouterHolder:
    """The router now serving. Reloads build a new Router beside the old one and swap the reference; batches
    already running keep the router they started with."""

    def __init__(self, router: Router, path: Path, threads: int, metrics: Metrics,
                 load: Callable[[Path, int], Router] = lambda p, t: Router.load(p, threads=t)) -> None:
        self.current = router
        self._load = load
        self._path = path
        self._threads = threads
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._refused: str | None = None  # manifest text of the last refused bundle, so it is not retried
        metrics.bundle.info({"version": router.version})

    def on_disk(self) -> str | None:
        try:
            return (self._path / "manifest.json").read_text()
        except OSError:
            return None  # mid-swap or gone: look again next time

    async def reload(self, *, reason: str) -> bool:
        async with self._lock:
            manifest = self.on_disk()
            try:
                new = await asyncio.to_thread(self._load, self._path, self._threads)
            except SemrouteError as e:
                self._refused = manifest
                self._metrics.reloads.labels("refused").inc()
                log.error("reload (%s) refused, still serving %s: %s", reason, self.current.version, e,
                          extra={"event": "reload_refused", "trigger": reason, "serving": self.current.version})
                return False
            old = self.current.version
            self.current = new
            self._refused = None
            self._metrics.reloads.labels("ok").inc()
            self._metrics.bundle.info({"version": new.version})
            log.warning("reloaded (%s): %s -> %s", reason, old, new.version,
                        extra={"event": "reloaded", "trigger": reason, "from": old, "serving": new.version})
            return True

    def changed(self) -> bool:
        text = self.on_disk()
        if text is None or text == self._refused:
            return False
        try:
            return bool(json.loads(text).get("version") != self.current.version)
        except ValueError:
            return text != self._refused


async def _watch(holder: RouterHolder, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        if holder.changed():
            await holder.reload(reason="bundle changed on disk")


async def serve(
    config: ServeConfig,
    *,
    ready: Callable[[int, str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set, for embedding: then no signal handlers are installed,
    and SIGHUP reloads are not available); returns the exit code. ``ready(port, version)`` is called once
    SERVING."""
    from ..ops.wiring import Ops

    metrics = Metrics()
    ops = Ops(config.ops, registry=metrics.registry)  # a bad key file or certificate fails before any loading
    # 1. load and warm: a bad (or, with --trusted-key, unsigned) bundle fails here, before a port is bound
    router = await asyncio.to_thread(ops.load_router, config.index, config.threads)
    holder = RouterHolder(router, config.index, config.threads, metrics, ops.load_router)
    ops.bind_router(lambda: holder.current)
    batcher = MicroBatcher(
        lambda: holder.current,
        max_batch_size=config.max_batch_size,
        max_wait_us=config.max_wait_us,
        max_queue=config.max_queue,
        on_batch=metrics.batch_size.observe,
    )
    # 2. bind
    server = grpc.aio.server(interceptors=ops.interceptors, options=[("grpc.so_reuseport", 0)])
    limits = Limits(max_text_chars=config.max_text_chars, max_batch_queries=config.max_batch_queries)
    service = RouterService(lambda: holder.current, batcher, limits, metrics)
    pb_grpc.add_RouterServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    try:
        port = ops.add_port(server, f"{config.host}:{config.port}")
    except RuntimeError as e:
        raise SemrouteError(f"cannot bind {config.host}:{config.port}: {e}") from e
    ops.start(router.version)
    await server.start()
    batcher.start()
    if config.metrics_port:
        metrics.serve_http(config.host, config.metrics_port)
    # 3. SERVING
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if ready:
        ready(port, holder.current.version)

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def _reload() -> None:
        t = loop.create_task(holder.reload(reason="SIGHUP"))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    signals = stop is None
    if stop is None:
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload)
    watcher = loop.create_task(_watch(holder, config.watch_interval)) if config.watch else None
    try:
        await stop.wait()
    finally:
        log.warning("draining (grace %.1fs)", config.grace_period, extra={"event": "draining"})
        if watcher:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        # Drain. Health goes NOT_SERVING so load balancers stop sending, but the server keeps answering until
        # no RPC has been in flight for a moment: grpc.aio's stop() cancels calls that reached the transport
        # but not yet a handler, so stopping at once would fail requests clients had already sent.
        await health.enter_graceful_shutdown()
        deadline = loop.time() + config.grace_period
        quiet_since: float | None = None
        while loop.time() < deadline:
            if service.in_flight == 0 and batcher.depth == 0:
                quiet_since = quiet_since or loop.time()
                if loop.time() - quiet_since >= _DRAIN_QUIET_S:
                    break
            else:
                quiet_since = None
            await asyncio.sleep(0.01)
        await server.stop(max(deadline - loop.time(), 0.5))
        await batcher.close()
        await ops.close()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    return 0
