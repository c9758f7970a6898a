"""One gRPC interceptor for every per-request operations feature, in this order:

    trace span starts -> API key checked (tenant and tier bound to the key) -> rate limit -> [the service]
    -> audit record queued -> stage spans, span ends

The service never sees a request that failed a check, and never knows these features exist. Health and
reflection pass through untouched unless ``--auth-open`` leaves them out, and then need a key allowed to call
them ("Health", "Reflection").

Tiers with auth on: the tier comes from the key. A request that sends no tier gets the key's. A request may
name another tier only if it is strictly narrower under the serving bundle's policy: every model it allows, the
key's tier allows too, its cost ceiling is no higher, and one of the two is smaller (``narrower``). Anything
else, or any other tier when the policy declares no tiers, is PERMISSION_DENIED. A request may not name another
tenant than its key's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .._proto.semroute.v1 import router_pb2 as pb
from ..errors import (
    PermissionDeniedError,
    RateLimitedError,
    SemrouteError,
    UnauthenticatedError,
    UnavailableError,
    grpc_status,
)
from .auth import Authenticator
from .config import OPEN_SERVICES
from .keys import ApiKey, parse_token
from .ratelimit import RateLimiter

log = logging.getLogger("semroute.server")
ROUTER_SERVICE = "semroute.v1.Router"
_RPC_OF_SERVICE = {"grpc.health.v1.Health": "Health", "grpc.reflection.v1alpha.ServerReflection": "Reflection",
                   "grpc.reflection.v1.ServerReflection": "Reflection"}


def narrower(policy: Any, wanted: str, granted: str) -> bool:
    """Whether tier ``wanted`` is strictly narrower than tier ``granted`` under ``policy`` (a PolicyEngine): its
    allowed models are a subset and its cost ceiling no higher, and at least one of the two is smaller."""
    tiers = policy.spec.tiers if policy is not None else {}
    if wanted not in tiers or granted not in tiers:
        return False
    w, g = tiers[wanted], tiers[granted]
    models = set(policy.models)

    def allowed(t: Any) -> set[str]:
        return (set(t.allow) if t.allow is not None else models) - set(t.exclude)

    inf = float("inf")
    wm, gm = allowed(w), allowed(g)
    wc = w.max_cost if w.max_cost is not None else inf
    gc = g.max_cost if g.max_cost is not None else inf
    # strictly narrower: a tier granting the same models and ceiling but another objective (say quality instead
    # of cheapest) would choose dearer models than the key was given, so it is not a narrowing
    return wm <= gm and wc <= gc and (wm < gm or wc < gc)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def decision_record(d: pb.Decision) -> dict[str, Any]:
    """The audit fields one decision contributes (the query text is added by the writer, per --audit-text)."""
    return {
        "bundle_version": d.index_version,
        "route": d.route if d.HasField("route") else None,
        "model": d.model,
        "reason": pb.Reason.Name(d.reason),
        "fallback": d.fallback,
        "score": _finite(d.score),
        "threshold": _finite(d.threshold) if d.HasField("threshold") else None,
        "margin": _finite(d.margin),
        "scores": {s.route: _finite(s.score) for s in d.scores},
        "truncated": d.truncated,
        # the policy's part (empty when no policy ran): what fired, what was applied, what was found
        "policy_version": d.policy_version or None,
        "tier_applied": d.tier or None,
        "rules": [t.subject for t in d.trace if t.kind == "rule fired"],
        "rule": d.rule or None,
        "pii_kinds": list(d.pii_kinds),
        "objective": d.objective or None,
        "estimated_cost": _finite(d.estimated_cost) if d.HasField("estimated_cost") else None,
    }


class OpsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        *,
        auth: Authenticator | None = None,
        limiter: RateLimiter | None = None,
        rate_by: str = "key",
        audit: Any = None,  # audit.writer.AuditWriter
        tracing: Any = None,  # tracing.Tracing
        open_services: frozenset[str] = frozenset(OPEN_SERVICES),
    ) -> None:
        self._auth = auth
        self._limiter = limiter
        self._rate_by = rate_by
        self._audit = audit
        self._tracing = tracing
        self._open = {OPEN_SERVICES[s] for s in open_services}
        if "reflection" in open_services:
            self._open.add("grpc.reflection.v1.ServerReflection")
        self._handlers: dict[str, Any] = {}
        self.get_router: Callable[[], Any] = lambda: None  # the serving Router, for its policy's tiers

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        method: str = details.method
        cached = self._handlers.get(method)
        if cached is not None:  # handlers are registered once, so each method's wrapper is built once
            return cached
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, name = method.lstrip("/").partition("/")
        if service == ROUTER_SERVICE and handler.unary_unary is not None:
            wrapped = self._wrap_router(name, handler)
        elif service in self._open or self._auth is None:
            wrapped = handler
        else:
            wrapped = self._wrap_auth_only(_RPC_OF_SERVICE.get(service, name), handler)
        self._handlers[method] = wrapped
        return wrapped

    # --- checks ----------------------------------------------------------------------------------------------

    def _bind(self, key: ApiKey, request: Any) -> None:
        mds = [request.metadata] if isinstance(request, pb.RouteRequest) else (
            [q.metadata for q in request.queries] if isinstance(request, pb.RouteBatchRequest) else [])
        for md in mds:
            if md.tenant and md.tenant != key.tenant:
                raise PermissionDeniedError(f"API key {key.id} is bound to tenant {key.tenant!r}; the request "
                                            f"names tenant {md.tenant[:64]!r} (omit it, or use a key of that tenant)")
            if md.user_tier and md.user_tier != key.tier:
                if not narrower(self._policy(), md.user_tier, key.tier):
                    raise PermissionDeniedError(
                        f"API key {key.id} is bound to tier {key.tier!r}; the request names tier "
                        f"{md.user_tier[:64]!r}, which is not narrower (a request may only narrow its tier: fewer "
                        "models and no higher cost ceiling; omit user_tier to use the key's)")
            else:
                md.user_tier = key.tier
            md.tenant = key.tenant

    def _policy(self) -> Any:
        router = self.get_router()
        return router.policy if router is not None else None

    async def _limit(self, key: ApiKey | None, request: Any) -> None:
        assert self._limiter is not None
        cost = max(1, len(request.queries)) if isinstance(request, pb.RouteBatchRequest) else 1
        rate = burst = None
        if self._rate_by == "key" and key is not None:
            bucket = f"key:{key.id}"
            if key.rate is not None:
                from .config import parse_rate

                rate, count = parse_rate(key.rate)
                burst = key.burst or count
        else:
            if key is not None:
                tenant = key.tenant
            elif isinstance(request, pb.RouteRequest):
                tenant = request.metadata.tenant
            elif isinstance(request, pb.RouteBatchRequest) and request.queries:
                tenant = request.queries[0].metadata.tenant
            else:
                tenant = ""
            bucket = f"tenant:{tenant}"
        wait = await self._limiter.take(bucket, cost, rate_per_s=rate, burst=burst)
        if wait > 0:
            who = bucket.replace(":", " ", 1)
            if math.isinf(wait):
                raise RateLimitedError(f"{who}: a request of {cost} queries exceeds the rate limit's burst; send "
                                       "smaller batches", None)
            raise RateLimitedError(f"{who} is over its rate limit; retry in {wait * 1000:.0f} ms", wait)

    async def _abort(self, context: grpc.aio.ServicerContext, e: SemrouteError) -> None:
        trailing: tuple[tuple[str, str], ...] = ()
        if isinstance(e, RateLimitedError) and e.retry_after_s is not None:
            trailing = (("retry-after-ms", str(math.ceil(e.retry_after_s * 1000))),)
        await context.abort(grpc_status(e), str(e), trailing_metadata=trailing)

    def _denied(self, rpc: str, context: grpc.aio.ServicerContext, e: SemrouteError) -> None:
        kid = None
        for k, v in context.invocation_metadata() or ():
            if k == "authorization" and isinstance(v, str):
                kid = parse_token(v.partition(" ")[2].strip())  # the id only; never the token
        self._audit.submit({"kind": "denied", "method": rpc, "code": grpc_status(e).name, "key_id": kid,
                            "peer": context.peer(), "message": str(e)})

    # --- wrappers --------------------------------------------------------------------------------------------

    def _wrap_router(self, rpc: str, handler: Any) -> Any:
        inner = handler.unary_unary
        auth, limiter, audit, tracing = self._auth, self._limiter, self._audit, self._tracing
        span_name = f"{ROUTER_SERVICE}/{rpc}"
        decides = rpc in ("Route", "RouteBatch")  # Info makes no decision, so fail-closed never refuses it

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start_ns = time.time_ns()
            md = context.invocation_metadata()
            span = tracing.start(span_name, md, start_ns) if tracing is not None else None
            key = None
            try:
                if auth is not None:
                    await auth.maybe_reload()
                    key = auth.authenticate(md, rpc)
                    self._bind(key, request)
                if limiter is not None:
                    await self._limit(key, request)
                if decides and audit is not None and audit.fail_closed and not audit.healthy:
                    raise UnavailableError("the audit trail cannot be written and the server runs with "
                                           "--audit-on-error fail-closed; retry later")
            except SemrouteError as e:
                if audit is not None and isinstance(e, UnauthenticatedError | PermissionDeniedError):
                    self._denied(rpc, context, e)
                if span is not None:
                    tracing.end(span, grpc_status(e).name, str(e))
                await self._abort(context, e)
            try:
                response = await inner(request, context)
            except BaseException:
                if span is not None:
                    code = context.code()
                    tracing.end(span, code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN")
                raise
            if audit is not None and not self._record(rpc, request, response, key, start_ns) and audit.fail_closed:
                if span is not None:
                    tracing.end(span, "UNAVAILABLE")
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the audit trail is not keeping up and the server "
                                    "runs with --audit-on-error fail-closed; retry later")
            if span is not None:
                ds = ([response.decision] if isinstance(response, pb.RouteResponse)
                      else list(response.decisions) if isinstance(response, pb.RouteBatchResponse) else [])
                tracing.decisions(span, start_ns, ds)
                tracing.end(span, "OK")
            return response

        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _record(self, rpc: str, request: Any, response: Any, key: ApiKey | None, start_ns: int) -> bool:
        pairs: list[tuple[str, pb.RequestMetadata, pb.Decision, int | None]]
        if isinstance(response, pb.RouteResponse):
            pairs = [(request.text, request.metadata, response.decision, None)]
        elif isinstance(response, pb.RouteBatchResponse):
            pairs = [(q.text, q.metadata, d, i) for i, (q, d) in enumerate(zip(request.queries, response.decisions,
                                                                                 strict=True))]
        else:
            return True  # Info: no decision
        ok = True
        for text, md, d, i in pairs:
            rec = {"kind": "decision", "method": rpc, "time": start_ns / 1e9, "request_id": md.request_id,
                   "tenant": md.tenant, "tier": md.user_tier, "key_id": key.id if key else None,
                   **decision_record(d)}
            if i is not None:
                rec["batch_index"] = i
            ok = self._audit.submit(rec, text) and ok
        return ok

    def _wrap_auth_only(self, rpc: str, handler: Any) -> Any:
        auth = self._auth
        assert auth is not None

        async def check(context: grpc.aio.ServicerContext) -> None:
            try:
                await auth.maybe_reload()
                auth.authenticate(context.invocation_metadata(), rpc)
            except SemrouteError as e:
                if self._audit is not None:
                    self._denied(rpc, context, e)
                await self._abort(context, e)

        if handler.unary_unary is not None:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream is not None:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(context)
                async for r in _aiter(us(request, context)):
                    yield r

            return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                        handler.response_serializer)
        if handler.stream_stream is not None:
            ss = handler.stream_stream

            async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(context)
                async for r in _aiter(ss(requests, context)):
                    yield r

            return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer,
                                                         handler.response_serializer)
        su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, handler.request_deserializer,
                                                    handler.response_serializer)


async def _aiter(result: Any) -> AsyncIterator[Any]:
    """A servicer's streaming method may be an async generator or a coroutine writing via context.write."""
    if hasattr(result, "__aiter__"):
        async for r in result:
            yield r
    else:
        await result
