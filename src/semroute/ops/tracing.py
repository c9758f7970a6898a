"""OpenTelemetry spans for the Router RPCs (optional extra ``semroute[otel]``; off unless configured).

One SERVER span per RPC, a child of the caller's span when the request carries W3C ``traceparent`` metadata,
and one child span per stage of each decision: queue, tokenize, encode, search, score (and policy once the
policy layer reports its time). The stages run on the encoder thread for a whole batch of requests at once, so
they are not wrapped live: each stage span is laid out from the durations the decision reports, in order, from
the moment the request was received. Durations of batched stages are this query's share of its batch
(attribute ``semroute.batch_size`` says how large it was).

When tracing is off nothing here is imported and no span code runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._proto.semroute.v1 import router_pb2 as pb

_STAGES = ("queue_ns", "tokenize_ns", "encode_ns", "search_ns", "score_ns")


def provider_for(endpoint: str) -> Any:
    """A TracerProvider exporting over OTLP/gRPC to ``endpoint`` (``http://host:4317`` is plaintext)."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        from ..errors import ConfigError

        raise ConfigError(f"tracing needs the otel extra ({e.name} is not installed)", field="--otel-endpoint",
                          hint="pip install 'semroute[otel]'") from None
    from .. import __version__

    provider = TracerProvider(resource=Resource.create({"service.name": "semroute",
                                                        "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                    insecure=endpoint.startswith("http://"))))
    return provider


class Tracing:
    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self.provider = provider
        self._tracer = provider.get_tracer("semroute")
        self._propagator = TraceContextTextMapPropagator()

    def start(self, name: str, metadata: Sequence[tuple[str, str | bytes]] | None, start_ns: int) -> Any:
        carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
        ctx = self._propagator.extract(carrier)
        return self._tracer.start_span(name, context=ctx, kind=self._trace.SpanKind.SERVER, start_time=start_ns,
                                       attributes={"rpc.system": "grpc", "rpc.service": "semroute.v1.Router",
                                                   "rpc.method": name.rsplit("/", 1)[-1]})

    def decisions(self, span: Any, start_ns: int, decisions: Sequence[pb.Decision]) -> None:
        parent = self._trace.set_span_in_context(span)
        for i, d in enumerate(decisions):
            t = start_ns
            ctx = parent
            if len(decisions) > 1:  # a batch: one span per query, its stages under it
                q = self._tracer.start_span("query", context=parent, start_time=t,
                                            attributes={"semroute.query_index": i})
                ctx = self._trace.set_span_in_context(q)
            for field in _STAGES:
                ns = int(getattr(d.timings, field))
                s = self._tracer.start_span(field[:-3], context=ctx, start_time=t,
                                            attributes={"semroute.batch_size": d.timings.batch_size})
                t += ns
                s.end(end_time=t)
            if len(decisions) > 1:
                q.end(end_time=t)
        if decisions:
            d = decisions[0]
            span.set_attribute("semroute.model", d.model)
            span.set_attribute("semroute.reason", pb.Reason.Name(d.reason))
            span.set_attribute("semroute.bundle_version", d.index_version)
            if d.HasField("route"):
                span.set_attribute("semroute.route", d.route)

    def end(self, span: Any, code: str, message: str = "") -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            span.set_status(Status(StatusCode.ERROR, message[:200]))
        span.end()

    def shutdown(self) -> None:
        self.provider.shutdown()
