"""Server lifecycle: load and warm, then bind, then SERVING; reload on SIGHUP or a new bundle; drain on SIGTERM.

    config = ServeConfig(index=Path("bundle"))
    asyncio.run(serve(config))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from .._proto.semroute.v1 import router_pb2 as pb
from ..errors import SemrouteError
from ..ops.config import OpsConfig
from .arrivals import Arrivals
from .batcher import MicroBatcher
from .decode import add_router_service
from .metrics import Metrics
from .reload import RouterHolder, watch
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
    inline_when_idle: bool = True  # a lone query is encoded on the loop's thread, not the worker's (batcher.py)
    max_tenants: int = 100  # distinct tenants labelled in semroute_tenant_requests_total; the rest share one label
    state: str = "memory"  # runtime feedback state: 'memory' (this process) or redis://HOST:PORT shared by replicas
    ops: OpsConfig | None = None  # keys, TLS, rate limits, audit, tracing, signed bundles


def check_bindable(host: str, port: int, flag: str = "port") -> None:
    """Fail with one clear line when ``host:port`` cannot be bound. gRPC's own bind failure is first logged by
    its C++ core on stderr (a line operators mistake for a crash) and then reported without the reason, so the
    address is tried here, before loading the bundle (a port in use is known in milliseconds, not after a load).
    A port taken in the moment between this check and gRPC's bind still fails, with gRPC's messages."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SemrouteError(f"cannot bind {host}:{port}: {e.strerror} (check --host / SEMROUTE_HOST)") from e
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: a TIME_WAIT port is free
            try:
                s.bind(addr)
            except OSError as e:
                raise SemrouteError(
                    f"cannot bind {host}:{port}: {(e.strerror or str(e)).lower()} (another process holds it? "
                    f"choose another --{flag} / SEMROUTE_{flag.upper().replace('-', '_')})"
                ) from e


async def serve(
    config: ServeConfig,
    *,
    ready: Callable[[int, str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set, for embedding: then no signal handlers are installed,
    and SIGHUP reloads are not available); returns the exit code. ``ready(port, version)`` is called once
    SERVING."""
    metrics = Metrics(max_tenants=config.max_tenants)
    check_bindable(config.host, config.port)
    check_bindable(config.host, config.metrics_port, "metrics-port")
    from .feedback import make_store

    # a bad --state URL fails here, before anything loads
    feedback = make_store(config.state, metrics, config.max_tenants)
    # 1. load and warm: a bad bundle fails here, before a port is bound
    from ..ops.wiring import Ops

    # a bad key file or certificate fails before any loading; rate limits share the state store when it is Redis
    ops = Ops(config.ops, registry=metrics.registry, state=feedback.loop.store)
    router = await asyncio.to_thread(ops.load_router, config.index, config.threads)  # with --trusted-key: signed
    holder = RouterHolder(router, config.index, config.threads, metrics, ops.load_router)
    ops.bind_router(lambda: holder.current)
    if config.watch:
        await holder.start()
    batcher = MicroBatcher(
        lambda: holder.current,
        max_batch_size=config.max_batch_size,
        max_wait_us=config.max_wait_us,
        max_queue=config.max_queue,
        on_batch=metrics.batch_size.observe,
        inline_when_idle=config.inline_when_idle,
    )
    # 2. bind
    arrivals = Arrivals() if config.inline_when_idle else None
    server = grpc.aio.server(interceptors=[*([arrivals] if arrivals else []), *ops.interceptors],
                             options=[("grpc.so_reuseport", 0)])
    limits = Limits(max_text_chars=config.max_text_chars, max_batch_queries=config.max_batch_queries)
    service = RouterService(lambda: holder.current, batcher, limits, metrics, feedback, arrivals)
    feedback.sync(holder.current)
    add_router_service(server, service, metrics)
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
    watcher: asyncio.Task[None] | None = None

    def _start_watcher(previous: asyncio.Task[None] | None = None) -> None:
        # watch() ends only when cancelled; should it end any other way while serving, start it again
        nonlocal watcher
        if previous is not None and (previous.cancelled() or stop.is_set()):
            return
        if previous is not None:
            log.error("bundle watcher ended unexpectedly (%r); restarting it", previous.exception(),
                      extra={"event": "watch_error"})
        watcher = loop.create_task(watch(holder, config.watch_interval, metrics))
        watcher.add_done_callback(_start_watcher)

    if config.watch:
        _start_watcher()
    try:
        await stop.wait()
    finally:
        await _drain(config, server, service, batcher, health, watcher, tasks)
        with contextlib.suppress(Exception):  # the state store's connections (Redis); nothing to do in process
            await feedback.loop.store.close()
        with contextlib.suppress(Exception):
            await ops.close()  # flush the audit log, end the trace exporter
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    return 0


async def _drain(
    config: ServeConfig,
    server: grpc.aio.Server,
    service: RouterService,
    batcher: MicroBatcher,
    health: health_aio.HealthServicer,
    watcher: asyncio.Task[None] | None,
    reloads: set[asyncio.Task[bool]],
) -> None:
    """Stop taking work and answer what was sent. Runs whatever happened before: each step is guarded, so a
    failure in one (logged) never skips the server's stop, which would leave grpc's threads to abort the
    process at exit."""
    loop = asyncio.get_running_loop()
    log.warning("draining (grace %.1fs)", config.grace_period, extra={"event": "draining"})
    deadline = loop.time() + config.grace_period
    for task in [*([watcher] if watcher else []), *reloads]:
        task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.gather(*([watcher] if watcher else []), *reloads, return_exceptions=True)
    try:
        # Health goes NOT_SERVING so load balancers stop sending, but the server keeps answering until no RPC
        # has been in flight for a moment: grpc.aio's stop() cancels calls that reached the transport but not
        # yet a handler, so stopping at once would fail requests clients had already sent.
        await health.enter_graceful_shutdown()
        quiet_since: float | None = None
        while loop.time() < deadline:
            if service.in_flight == 0 and batcher.depth == 0:
                quiet_since = quiet_since or loop.time()
                if loop.time() - quiet_since >= _DRAIN_QUIET_S:
                    break
            else:
                quiet_since = None
            await asyncio.sleep(0.01)
    except Exception:
        log.exception("drain interrupted; stopping the server now", extra={"event": "drain_error"})
    try:
        await server.stop(max(deadline - loop.time(), 0.5))
    finally:
        with contextlib.suppress(Exception):
            await batcher.close()
