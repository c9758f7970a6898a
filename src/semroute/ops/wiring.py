"""Build the operations features an OpsConfig asks for, and hand the server what it needs from them:

    ops = Ops(config.ops, registry=metrics.registry, state=store)  # state: the runtime store (rate limits share it)
    router = ops.load_router(path, threads)         # signature checked first when --trusted-key is given
    server = grpc.aio.server(interceptors=ops.interceptors)
    port = ops.add_port(server, "127.0.0.1:50051")  # TLS / mTLS when configured
    ops.start(version); ...; await ops.close()      # the audit writer's thread, the trace exporter
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .. import __version__
from ..errors import BundleError
from ..router import Router
from .config import OpsConfig, parse_rate

if TYPE_CHECKING:
    from ..runtime.store import StateStore

log = logging.getLogger("semroute.server")


class Ops:
    def __init__(self, config: OpsConfig | None, *, registry: Any = None, state: StateStore | None = None) -> None:
        """``state``: the runtime state store; when it is shared (``--state redis://...``) the rate limits are
        taken from it, so every replica on that Redis draws on the same buckets."""
        self.config = config = config or OpsConfig()
        self._verifier = None
        if config.trusted_keys:
            from ..signing import BundleVerifier

            self._verifier = BundleVerifier(list(config.trusted_keys))
        self.credentials = None
        if config.tls_cert is not None:
            from .tls import server_credentials

            assert config.tls_key is not None
            self.credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        self.interceptors: list[grpc.aio.ServerInterceptor] = []
        self.audit: Any = None
        self.tracing: Any = None
        if not config.intercepts:
            return
        auth = limiter = None
        if config.keys_file is not None:
            from .auth import Authenticator

            auth = Authenticator(config.keys_file, reload_s=config.keys_reload_s)
        if config.rate_limit is not None:
            from .ratelimit import BucketStore, MemoryBucketStore, RateLimiter, StateBuckets

            rate, count = parse_rate(config.rate_limit)
            buckets: BucketStore
            if config.bucket_store is not None:
                buckets = config.bucket_store
            elif state is not None and state.name != "memory":
                buckets = StateBuckets(state)
                log.warning("rate limit %s per %s shared by every replica on the %s state store", config.rate_limit,
                            config.rate_by, state.name, extra={"event": "rate_limit_shared", "store": state.name})
            else:
                buckets = MemoryBucketStore()  # this replica only
            limiter = RateLimiter(buckets, rate_per_s=rate, burst=config.rate_burst or count)
        if config.audit_log is not None:
            from ..audit.writer import AuditWriter, load_or_create_key

            key = None
            if config.audit_text == "hmac":
                key_path = config.audit_key or config.audit_log.with_name(config.audit_log.name + ".key")
                key = load_or_create_key(key_path, create=config.audit_key is None)
            self.audit = AuditWriter(config.audit_log, text_mode=config.audit_text, key=key,
                                     max_bytes=config.audit_max_bytes, on_error=config.audit_on_error,
                                     queue_size=config.audit_queue, registry=registry)
        if config.tracer_provider is not None or config.otel_endpoint:
            from .tracing import Tracing, provider_for

            self.tracing = Tracing(config.tracer_provider or provider_for(str(config.otel_endpoint)))
        from .interceptor import OpsInterceptor

        self.interceptors.append(OpsInterceptor(auth=auth, limiter=limiter, rate_by=config.rate_by,
                                                audit=self.audit, tracing=self.tracing,
                                                open_services=config.open_services))

    def bind_router(self, get_router: Callable[[], Router]) -> None:
        """Where the interceptor finds the serving bundle's policy (tiers, for narrowing a key's tier)."""
        for i in self.interceptors:
            i.get_router = get_router

    def load_router(self, path: Path, threads: int) -> Router:
        """Router.load, after checking the bundle's signature when trusted keys are configured. Runs on a worker
        thread (start and reload alike)."""
        if self._verifier is None:
            return Router.load(path, threads=threads)
        signed = self._verifier.verify(path)
        router = Router.load(path, threads=threads)
        if router.version != signed.version:  # the directory was swapped between the check and the load
            raise BundleError(f"{path}: the bundle changed while it was being loaded (signed {signed.version}, "
                              f"loaded {router.version}); it will be checked again")
        log.warning("bundle %s signature verified (key %s)", signed.version, signed.key_id,
                    extra={"event": "bundle_verified", "bundle_version": signed.version, "key_id": signed.key_id})
        return router

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        if self.credentials is not None:
            return int(server.add_secure_port(address, self.credentials))
        return int(server.add_insecure_port(address))

    def start(self, bundle_version: str) -> None:
        if self.audit is not None:
            self.audit.start(semroute_version=__version__, bundle_version=bundle_version)

    async def close(self) -> None:
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
