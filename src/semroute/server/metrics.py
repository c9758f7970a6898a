"""Prometheus metrics. One registry per server, so tests can run several servers in one process."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from .._proto.semroute.v1 import router_pb2 as pb

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
log = logging.getLogger("semroute.server")
NO_TENANT = "(none)"  # parentheses are outside the tenant alphabet, so these never collide with a real tenant
OTHER_TENANTS = "(other)"


class Metrics:
    def __init__(self, max_tenants: int = 100) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "semroute_decisions_total", "Decisions made, by route (or 'fallback') and reason",
            ["route", "reason"], registry=r,
        )
        self.requests = Counter(
            "semroute_requests_total", "RPCs by method and gRPC status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "semroute_request_seconds", "Server time per RPC", ["method"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "semroute_stage_seconds", "Per-query time by stage (queue, tokenize, encode, search, score)",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "semroute_batch_size", "Queries per encoder call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.queue_depth = Gauge("semroute_queue_depth", "Queries waiting for the encoder", registry=r)
        self.reloads = Counter("semroute_reloads_total", "Bundle reloads by result", ["result"], registry=r)
        self.bundle = Info("semroute_bundle", "The bundle now serving", registry=r)
        self.bundle_loaded = Gauge(
            "semroute_bundle_loaded_timestamp_seconds", "When the bundle now serving was loaded (Unix time)",
            registry=r,
        )
        self.bundle_created = Gauge(
            "semroute_bundle_created_timestamp_seconds", "When the bundle now serving was built (Unix time)",
            registry=r,
        )
        self.bundle_age = Gauge(
            "semroute_bundle_age_seconds", "Seconds since the bundle now serving was built", registry=r
        )
        self._created = time.time()
        self.bundle_age.set_function(lambda: time.time() - self._created)
        self.watcher_up = Gauge(
            "semroute_reload_watcher_up", "1 while the bundle watcher runs (0 with --no-watch or once stopped)",
            registry=r,
        )
        self.watcher_checked = Gauge(
            "semroute_reload_watcher_last_check_timestamp_seconds",
            "When the bundle watcher last looked at the bundle directory (Unix time); stale means it is stuck",
            registry=r,
        )
        self.undecodable = Counter(
            "semroute_undecodable_requests_total", "Requests whose bytes are not a valid protobuf message "
            "(also counted in semroute_requests_total as INVALID_ARGUMENT)", ["method"], registry=r,
        )
        self.tenants = TenantCounter(
            Counter("semroute_tenant_requests_total", f"Queries by metadata.tenant: the first {max_tenants} "
                    f"distinct tenants by name, the rest as '{OTHER_TENANTS}', none as '{NO_TENANT}'",
                    ["tenant"], registry=r),
            max_tenants,
        )
        # runtime feedback (semroute.runtime)
        self.breaker_state = Gauge(
            "semroute_breaker_state", "Circuit breaker per model or model@endpoint: 0 closed, 1 half-open, 2 open",
            ["key"], registry=r,
        )
        self.state_store_up = Gauge(
            "semroute_state_store_up", "1 while the state store answers (always 1 in process)", registry=r
        )
        self.cache_lookups = Counter("semroute_decision_cache_lookups_total", "Decision cache lookups", registry=r)
        self.cache_hits = Counter("semroute_decision_cache_hits_total", "Decision cache hits", registry=r)
        self.cache_hit_ratio = Gauge(
            "semroute_decision_cache_hit_ratio", "Decision cache hits / lookups since start", registry=r
        )
        self.escalations = Counter(
            "semroute_escalations_total", "Escalation requests by route, tenant and outcome",
            ["route", "tenant", "outcome"], registry=r,
        )
        self.outcomes = Counter(
            "semroute_outcomes_total", "Reported outcomes by model, outcome, and whether the request_id was known",
            ["model", "outcome", "request"], registry=r,
        )

    def set_bundle(self, version: str, created: float | None) -> None:
        now = time.time()
        self.bundle.info({"version": version})
        self.bundle_loaded.set(now)
        self._created = created if created is not None else now
        self.bundle_created.set(self._created)

    def serve_http(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


class TenantCounter:
    """Counts queries by tenant, and logs each at DEBUG with its tenant, tier and request id.

    Tenant is a string the caller chooses. A label per distinct value would let any client grow the server's
    memory and the metrics backend without bound, so only the first ``max_tenants`` values get a label of their
    own; later ones are counted together under '(other)' (and logged by name, at DEBUG)."""

    def __init__(self, counter: Counter, max_tenants: int) -> None:
        self._counter = counter
        self._max = max_tenants
        self._children: dict[str, Any] = {"": counter.labels(NO_TENANT)}
        self._other = counter.labels(OTHER_TENANTS)

    def count(self, md: pb.RequestMetadata) -> None:
        child = self._children.get(md.tenant)
        if child is None:
            if len(self._children) <= self._max:  # "" is not a tenant, hence <=
                child = self._children[md.tenant] = self._counter.labels(md.tenant)
            else:
                child = self._other
        child.inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("query from tenant %r", md.tenant, extra={
                "event": "query", "tenant": md.tenant, "user_tier": md.user_tier, "request_id": md.request_id})
