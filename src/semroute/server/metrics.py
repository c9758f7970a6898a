"""Prometheus metrics. One registry per server, so tests can run several servers in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
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

    def serve_http(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
