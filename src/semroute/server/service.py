"""The semroute.v1.Router gRPC service: validate requests, queue them on the batcher, answer decisions.

Errors: every SemrouteError maps to its status through semroute.errors.grpc_status (the one table). Anything
else is a bug: logged with its traceback and answered INTERNAL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from .. import __version__
from .._proto.semroute.v1 import router_pb2 as pb
from .._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from .._text import CONTENTLESS, has_content
from ..errors import DeadlineExceededError, PolicyDeniedError, RequestError, SemrouteError, grpc_status
from ..policy.engine import PreResult
from ..policy.requests import check_labels, check_policy_options
from ..policy.types import RequestContext
from ..router import Router
from ..scoring import Decision, Reason
from .arrivals import Arrivals
from .batcher import MicroBatcher
from .convert import REASON_TO_PB, decision_to_pb
from .feedback import ServingFeedback
from .metrics import Metrics

log = logging.getLogger("semroute.server")

_LABEL = re.compile(r"[A-Za-z0-9_.:\-]{0,64}")  # fullmatch: '$' would also match before a final newline
_MAX_TOP = 100
T = TypeVar("T")
_REASON_NAME = {r: pb.Reason.Name(v) for r, v in REASON_TO_PB.items()}


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 10_000
    max_batch_queries: int = 256


def _check_text(field: str, text: str, limit: int) -> None:
    if not text or not text.strip():
        raise RequestError(field, "is empty or only whitespace; send the user's query text")
    if len(text) > limit:
        raise RequestError(
            field, f"is {len(text)} characters; the limit is {limit} (server flag --max-text-chars)"
        )
    if not has_content(text):  # after the length check: it may read every character
        raise RequestError(field, f"{CONTENTLESS}; send the user's query text")


def _check_metadata(field: str, md: pb.RequestMetadata) -> None:
    for name in ("tenant", "user_tier"):
        value = getattr(md, name)
        if not _LABEL.fullmatch(value):
            raise RequestError(f"{field}.{name}", "must be 0-64 characters of letters, digits, '_', '.', ':', '-'")
    if len(md.request_id) > 128 or not md.request_id.isprintable():
        raise RequestError(f"{field}.request_id", "must be at most 128 printable characters")
    if len(md.conversation_id) > 128 or not md.conversation_id.isprintable():
        raise RequestError(f"{field}.conversation_id", f"must be at most 128 printable characters "
                                                       f"(got {len(md.conversation_id)})")
    check_labels(f"{field}.labels", md.labels)


def _context(md: pb.RequestMetadata, opts: pb.RouteOptions) -> RequestContext:
    return RequestContext(
        tenant=md.tenant, tier=md.user_tier, labels=dict(md.labels),
        max_cost=opts.max_cost if opts.HasField("max_cost") else None,
        quality_floor=opts.quality_floor if opts.HasField("quality_floor") else None,
        objective=opts.objective if opts.HasField("objective") else None,  # type: ignore[arg-type]
        quality_target=opts.quality_target if opts.HasField("quality_target") else None,
    )


def _quality_target(opts: pb.RouteOptions, router: Router) -> float | None:
    if not opts.HasField("quality_target"):
        return None
    q = opts.quality_target
    if not 0.0 <= q <= 1.0:  # also refuses NaN
        raise RequestError("options.quality_target", f"must be in [0, 1] (a predicted quality), got {q}")
    if router.quality_predictor is None and router.policy is None:
        raise RequestError("options.quality_target", "this bundle has no quality predictor and no policy; fit "
                           "one with 'semroute fit-quality --outcomes FILE' or leave the option out")
    return q


def _check_deadline(context: grpc.aio.ServicerContext, when: str) -> None:
    # Checked before the encoder (a request whose deadline has passed is not worth an encoder call) and after it (a
    # late answer is answered DEADLINE_EXCEEDED): on a busy machine gRPC's own deadline timers can fire after the
    # answer is sent, and the client would then get a success past its deadline.
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError(f"the request's deadline passed {when}")


def _options(opts: pb.RouteOptions) -> tuple[int, int]:
    top_s = opts.top_scores if opts.HasField("top_scores") else 5
    top_n = opts.top_neighbours if opts.HasField("top_neighbours") else 3
    if top_s > _MAX_TOP:
        raise RequestError("options.top_scores", f"must be at most {_MAX_TOP}")
    if top_n > _MAX_TOP:
        raise RequestError("options.top_neighbours", f"must be at most {_MAX_TOP}")
    check_policy_options("options", opts.max_cost if opts.HasField("max_cost") else None,
                         opts.quality_floor if opts.HasField("quality_floor") else None,
                         opts.objective if opts.HasField("objective") else None)
    return top_s, top_n


class RouterService(pb_grpc.RouterServicer):
    def __init__(
        self, get_router: Callable[[], Router], batcher: MicroBatcher, limits: Limits, metrics: Metrics,
        feedback: ServingFeedback | None = None, arrivals: Arrivals | None = None,
    ) -> None:
        self._get_router = get_router
        # the server's first interceptor, when the batcher may encode a lone query inline (batcher.py)
        self._arrivals = arrivals
        self._feedback = feedback  # the runtime feedback loop (semroute.runtime); None: decisions by meaning only
        self._batcher = batcher
        self._limits = limits
        self._metrics = metrics
        self._stage_hists = [metrics.stage.labels(s) for s in ("queue", "tokenize", "encode", "search", "score")]
        self._decision_counters: dict[tuple[str, Reason], Any] = {}
        self._rpc_metrics: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        self.in_flight = 0  # RPCs being handled now; shutdown waits for this to stay at 0
        self._ended = 0.0  # perf_counter when the last RPC's handler finished

    def _alone(self) -> bool:
        """No other RPC in a handler, none accepted after the caller's, and the caller's not accepted right as the
        previous one ended (it waited behind it: arrivals.py). The batcher's inline path asks."""
        return (self.in_flight == 1 and self._arrivals is not None
                and self._arrivals.accepted_alone(self._ended))

    async def _semantic(self, texts: list[str], top_s: int, top_n: int) -> list[tuple[Decision, int]]:
        return await self._batcher.submit_many(texts, top_s, top_n,
                                               alone=self._alone if self._arrivals is not None else None)

    async def _guard(self, method: str, context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        self.in_flight += 1
        try:
            return await fn()
        except SemrouteError as e:
            code = grpc_status(e)
            await context.abort(code, str(e))
        except Exception:  # a bug, not the client's fault: log it whole, answer INTERNAL
            code = grpc.StatusCode.INTERNAL
            log.exception("internal error in %s", method)
            await context.abort(code, "internal error; see the server log")
        finally:
            self.in_flight -= 1
            self._ended = time.perf_counter()
            # bookkeeping after the answer is on its way (the next turn of the event loop), not in front of it
            asyncio.get_running_loop().call_soon(self._record_rpc, method, code, time.perf_counter() - start)
        raise AssertionError("unreachable")  # context.abort raises

    def _record_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        children = self._rpc_metrics.get((method, code))
        if children is None:  # labels() takes a lock and builds a key: look each child up once
            m = self._metrics
            children = self._rpc_metrics[(method, code)] = (
                m.requests.labels(method, code.name), m.latency.labels(method)
            )
        children[0].inc()
        children[1].observe(seconds)

    def _observe(self, decisions: list[Decision]) -> None:
        m = self._metrics
        for d in decisions:
            key = (d.route or "fallback", d.reason)
            counter = self._decision_counters.get(key)
            if counter is None:  # labels() takes a lock and builds a key: look each child up once
                counter = self._decision_counters[key] = m.decisions.labels(key[0], _REASON_NAME[d.reason])
            counter.inc()
            t = d.timings
            for hist, ns in zip(self._stage_hists, (t.queue_ns, t.tokenize_ns, t.encode_ns, t.search_ns,
                                                    t.score_ns), strict=True):
                hist.observe(ns / 1e9)
        m.queue_depth.set(self._batcher.depth)

    async def _decide(
        self, texts: list[str], metadata: list[pb.RequestMetadata], opts: pb.RouteOptions, received_ns: int,
        context: grpc.aio.ServicerContext, fields: list[str],
    ) -> list[pb.Decision]:
        """Policy pre rules on the event loop (cheap: one RE2 pass and the PII validators); only the queries no
        rule decided go through the batcher and the encoder; then post rules and the candidate choice."""
        _check_deadline(context, "before it reached the encoder; nothing was encoded")
        top_s, top_n = _options(opts)
        router = self._get_router()
        target = _quality_target(opts, router)
        if router.policy is None:  # no policy declared: the semantic step alone (and the quality target, if set)
            done = await self._semantic(texts, top_s, top_n)
            if target is not None:
                done = [(router.meet_target(d, target), b) for d, b in done]
            return self._answer(done, received_ns, context)
        ctxs = [router.target_context(_context(md, opts)) for md in metadata]
        pres = _pre_all(router, texts, ctxs, fields)
        todo = [i for i, p in enumerate(pres) if not p.decided]
        results = await self._semantic([texts[i] for i in todo], top_s, top_n) if todo else []
        semantic: dict[int, tuple[Decision, int]] = dict(zip(todo, results, strict=True))
        if any(d.index_version != router.version for d, _ in results):
            # a reload landed between the pre rules and the encoder: finish with the policy of the bundle that
            # scored the queries (route names and candidates come from it)
            router = self._get_router()
            if router.policy is None:  # the new bundle declares no policy: its semantic decisions, for every query
                done = ([semantic[i] for i in range(len(texts))] if len(todo) == len(texts)
                        else await self._semantic(texts, top_s, top_n))
                return self._answer(done, received_ns, context)
            pres = _pre_all(router, texts, ctxs, fields)
        engine = router.policy
        assert engine is not None  # checked above, after the last reload
        decisions: list[tuple[Decision, int]] = []
        for i, p in enumerate(pres):
            sem, batch = semantic.get(i, (None, 0))
            try:
                d = engine.finish(p, sem, index_version=router.version, runtime=router.runtime.view(ctxs[i]))
                if target is not None:
                    d = dataclasses.replace(d, quality_target=target)
            except PolicyDeniedError as e:
                raise _name_query(fields[i], e) from None
            decisions.append((d, batch))
        return self._answer(decisions, received_ns, context)

    def _answer(self, decisions: list[tuple[Decision, int]], received_ns: int,
                context: grpc.aio.ServicerContext) -> list[pb.Decision]:
        total = time.perf_counter_ns() - received_ns
        out = [decision_to_pb(d, total_ns=total, batch_size=b) for d, b in decisions]
        # Metrics are bookkeeping, not part of the answer: record them after the response has been handed to
        # gRPC (the next turn of the event loop) rather than in front of it.
        asyncio.get_running_loop().call_soon(self._observe, [d for d, _ in decisions])
        _check_deadline(context, "while it was being answered")
        return out

    async def Route(self, request: pb.RouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteResponse:
        received = time.perf_counter_ns()

        async def run() -> pb.RouteResponse:
            _check_text("text", request.text, self._limits.max_text_chars)
            _check_metadata("metadata", request.metadata)
            self._metrics.tenants.count(request.metadata)
            if self._feedback is not None:
                async def compute() -> pb.Decision:
                    return (await self._decide([request.text], [request.metadata], request.options, received,
                                               context, [""]))[0]

                d = await self._feedback.route(self._get_router(), request, _options(request.options), received,
                                               compute, time.perf_counter_ns)
                return pb.RouteResponse(decision=d, request_id=request.metadata.request_id)
            (d,) = await self._decide([request.text], [request.metadata], request.options, received, context, [""])
            return pb.RouteResponse(decision=d, request_id=request.metadata.request_id)

        return await self._guard("Route", context, run)

    async def RouteBatch(
        self, request: pb.RouteBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteBatchResponse:
        received = time.perf_counter_ns()

        async def run() -> pb.RouteBatchResponse:
            n = len(request.queries)
            if n == 0:
                raise RequestError("queries", "is empty; send at least one query")
            if n > self._limits.max_batch_queries:
                raise RequestError(
                    "queries", f"has {n} queries; at most {self._limits.max_batch_queries} per call "
                    "(server flag --max-batch-queries)",
                )
            for i, q in enumerate(request.queries):
                _check_text(f"queries[{i}].text", q.text, self._limits.max_text_chars)
                _check_metadata(f"queries[{i}].metadata", q.metadata)
            for q in request.queries:
                self._metrics.tenants.count(q.metadata)
            if self._feedback is not None:
                await self._feedback.refresh(self._get_router())
            ds = await self._decide([q.text for q in request.queries], [q.metadata for q in request.queries],
                                    request.options, received, context, [f"queries[{i}]." for i in range(n)])
            if self._feedback is not None:
                await self._feedback.batch(self._get_router(), list(request.queries), ds)
            return pb.RouteBatchResponse(decisions=ds)

        return await self._guard("RouteBatch", context, run)

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        async def run() -> pb.InfoResponse:
            resp = info_response(self._get_router(), self._batcher)
            if self._feedback is not None:
                await self._feedback.fill_info(self._get_router(), resp)
            return resp

        return await self._guard("Info", context, run)

    async def ReportOutcome(
        self, request: pb.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomeResponse:
        async def run() -> pb.ReportOutcomeResponse:
            if self._feedback is None:
                raise RequestError("request_id", "this server runs without the feedback loop")
            return await self._feedback.report(self._get_router(), request)

        return await self._guard("ReportOutcome", context, run)


def info_response(router: Router, batcher: MicroBatcher) -> pb.InfoResponse:
    b = router.bundle
    policy = router.policy
    routes: dict[str, Any] = b.routes
    enc = b.manifest["encoder"]
    th = dict(zip(b.table.names, b.table.thresholds.tolist(), strict=True))
    return pb.InfoResponse(
        index_version=b.version,
        semroute_version=__version__,
        fallback_model=routes["fallback_model"],
        routes=[
            pb.RouteInfo(
                name=r["name"], model=r["model"], threshold=th[r["name"]], description=r.get("description") or "",
                tier=r.get("tier") or "", metadata=r.get("metadata") or {},
                n_utterances=r.get("n_utterances", 0), n_negative=r.get("n_negative", 0),
            )
            for r in routes["routes"]
        ],
        models=[
            pb.ModelInfo(
                name=name, cost_per_1k_input=m.cost_per_1k_input, cost_per_1k_output=m.cost_per_1k_output,
                description=m.description or "",
            )
            for name, m in b.models.items()
        ],
        encoder_name=enc.get("name") or "",
        encoder_fingerprint=enc["fingerprint"],
        encoder_dim=enc["dim"],
        encoder_max_tokens=enc["max_tokens"],
        settings_json=json.dumps(b.manifest.get("settings", {}), sort_keys=True),
        bundle_created=b.manifest.get("created", ""),
        max_batch_size=batcher.max_batch_size,
        max_wait_us=batcher.max_wait_us,
        policy_version=policy.version if policy is not None else "",
        policy_json=json.dumps(policy.describe(), sort_keys=True) if policy is not None else "",
        tiers=list(policy.spec.tiers) if policy is not None else [],
        default_tier=(policy.spec.default_tier or "") if policy is not None else "",
    )


def _pre_all(router: Router, texts: list[str], ctxs: list[RequestContext], fields: list[str]) -> list[PreResult]:
    assert router.policy is not None
    out = []
    for t, c, f in zip(texts, ctxs, fields, strict=True):
        try:
            out.append(router.policy.pre(t, c, field_prefix=f"{f}metadata"))
        except PolicyDeniedError as e:
            raise _name_query(f, e) from None
    return out


def _name_query(field: str, e: PolicyDeniedError) -> PolicyDeniedError:
    """A denial in a batch names the query it is about."""
    return PolicyDeniedError(f"{field.rstrip('.')}: {e}") if field else e
