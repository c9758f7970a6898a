"""Typed clients for a running ``semroute serve`` (sync and async). Answers are the same ``Decision`` objects
the in-process Router returns; errors are the same ``SemrouteError`` classes.

    with RouterClient("127.0.0.1:50051") as client:
        d = client.route("my card was charged twice", tenant="acme")
        print(d.model, d.reason)

    async with AsyncRouterClient("127.0.0.1:50051") as client:
        d = await client.route("translate this to French")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from ._proto.semroute.v1 import router_pb2 as pb
from ._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from .errors import (
    BundleError,
    OverloadedError,
    PermissionDeniedError,
    PolicyDeniedError,
    RequestError,
    SemrouteError,
    UnauthenticatedError,
    UnavailableError,
)
from .scoring import Decision
from .server.convert import decision_from_pb

_DEFAULT_TIMEOUT = 5.0


def _error(e: grpc.RpcError) -> SemrouteError:
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, msg = details.partition(": ")
        return RequestError(field, msg or details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        # two causes share the status: the key (ops.interceptor, messages start "API key <id>") or the policy
        return PermissionDeniedError(details) if details.startswith("API key ") else PolicyDeniedError(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OverloadedError(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(f"{code.name}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return BundleError(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return UnauthenticatedError(details)
    return SemrouteError(f"{code.name}: {details}")


def _metadata(
    tenant: str, user_tier: str, request_id: str, labels: Mapping[str, str] | None = None, conversation_id: str = ""
) -> pb.RequestMetadata:
    return pb.RequestMetadata(tenant=tenant, user_tier=user_tier, request_id=request_id, labels=labels or {},
                              conversation_id=conversation_id)


def _route_request(
    text: str, tenant: str, user_tier: str, request_id: str, top_scores: int, top_neighbours: int,
    labels: Mapping[str, str] | None, policy: PolicyOptions | None, conversation_id: str,
    escalate_from: str | None, confidence: float | None,
) -> pb.RouteRequest:
    req = pb.RouteRequest(
        text=text, metadata=_metadata(tenant, user_tier, request_id, labels, conversation_id),
        options=_options(top_scores, top_neighbours, policy),
    )
    if escalate_from is not None:
        req.escalate.CopyFrom(pb.Escalation(from_model=escalate_from, confidence=1.0 if confidence is None
                                            else confidence))
    return req


_OUTCOMES = {"ok": pb.OUTCOME_OK, "error": pb.OUTCOME_ERROR, "timeout": pb.OUTCOME_TIMEOUT,
             "rate_limited": pb.OUTCOME_RATE_LIMITED}


def _outcome_request(
    request_id: str, model: str, outcome: str, endpoint: str, latency_ms: float, tokens_in: int, tokens_out: int,
    confidence: float | None, feedback: str, tenant: str,
) -> pb.ReportOutcomeRequest:
    if outcome not in _OUTCOMES:
        raise RequestError("outcome", f"'{outcome}' is not one of {', '.join(_OUTCOMES)}")
    req = pb.ReportOutcomeRequest(
        request_id=request_id, model=model, endpoint=endpoint, outcome=_OUTCOMES[outcome], latency_ms=latency_ms,
        tokens_in=tokens_in, tokens_out=tokens_out, feedback=feedback, tenant=tenant,
    )
    if confidence is not None:
        req.confidence = confidence
    return req


def _options(top_scores: int, top_neighbours: int, policy: PolicyOptions | None = None) -> pb.RouteOptions:
    opts = pb.RouteOptions(top_scores=top_scores, top_neighbours=top_neighbours)
    if policy is not None:
        if policy.max_cost is not None:
            opts.max_cost = policy.max_cost
        if policy.quality_floor is not None:
            opts.quality_floor = policy.quality_floor
        if policy.objective is not None:
            opts.objective = policy.objective
    return opts


@dataclass(frozen=True)
class PolicyOptions:
    """Per-request tightening of the tier's settings (RouteOptions fields 20-22)."""

    max_cost: float | None = None
    quality_floor: float | None = None
    objective: str | None = None


class _Sync(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._md = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(metadata=(*(details.metadata or ()), *self._md)), request)


class _Async(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._md = metadata

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details._replace(metadata=(*(details.metadata or ()), *self._md)), request)


def _auth(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


class RouterClient:
    """Blocking client. ``timeout`` is the per-call deadline in seconds; ``api_key`` is sent as
    ``authorization: Bearer`` metadata; ``credentials`` (grpc.ssl_channel_credentials) make the channel TLS."""

    def __init__(self, target: str, *, timeout: float = _DEFAULT_TIMEOUT, api_key: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._channel = (grpc.secure_channel(target, credentials) if credentials is not None
                         else grpc.insecure_channel(target))
        if api_key:
            self._channel = grpc.intercept_channel(self._channel, _Sync(_auth(api_key)))
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    def route(
        self, text: str, *, tenant: str = "", user_tier: str = "", request_id: str = "",
        top_scores: int = 5, top_neighbours: int = 3, labels: Mapping[str, str] | None = None,
        policy: PolicyOptions | None = None, conversation_id: str = "",
        escalate_from: str | None = None, confidence: float | None = None,
    ) -> Decision:
        """``escalate_from`` + ``confidence``: the previous answer (from that model) was this sure; under the
        route's escalation threshold the decision is the next model up (reason ESCALATED)."""
        req = _route_request(text, tenant, user_tier, request_id, top_scores, top_neighbours, labels, policy,
                             conversation_id, escalate_from, confidence)
        try:
            return decision_from_pb(self._stub.Route(req, timeout=self.timeout).decision)
        except grpc.RpcError as e:
            raise _error(e) from None

    def route_batch(
        self, texts: Sequence[str], *, tenant: str = "", user_tier: str = "", top_scores: int = 5,
        top_neighbours: int = 3, labels: Mapping[str, str] | None = None, policy: PolicyOptions | None = None,
    ) -> list[Decision]:
        md = _metadata(tenant, user_tier, "", labels)
        req = pb.RouteBatchRequest(
            queries=[pb.Query(text=t, metadata=md) for t in texts],
            options=_options(top_scores, top_neighbours, policy),
        )
        try:
            return [decision_from_pb(d) for d in self._stub.RouteBatch(req, timeout=self.timeout).decisions]
        except grpc.RpcError as e:
            raise _error(e) from None

    def info(self) -> pb.InfoResponse:
        try:
            info: pb.InfoResponse = self._stub.Info(pb.InfoRequest(), timeout=self.timeout)
            return info
        except grpc.RpcError as e:
            raise _error(e) from None

    def report_outcome(
        self, request_id: str, model: str, outcome: str = "ok", *, endpoint: str = "", latency_ms: float = 0.0,
        tokens_in: int = 0, tokens_out: int = 0, confidence: float | None = None, feedback: str = "",
        tenant: str = "",
    ) -> pb.ReportOutcomeResponse:
        """Tell the router what happened when you called ``model`` (outcome: ok, error, timeout, rate_limited)."""
        req = _outcome_request(request_id, model, outcome, endpoint, latency_ms, tokens_in, tokens_out, confidence,
                               feedback, tenant)
        try:
            resp: pb.ReportOutcomeResponse = self._stub.ReportOutcome(req, timeout=self.timeout)
            return resp
        except grpc.RpcError as e:
            raise _error(e) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRouterClient:
    """asyncio client; one channel shared by all calls (HTTP/2 multiplexes them)."""

    def __init__(self, target: str, *, timeout: float = _DEFAULT_TIMEOUT, api_key: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        interceptors = [_Async(_auth(api_key))] if api_key else None
        self._channel = (grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
                         if credentials is not None else grpc.aio.insecure_channel(target, interceptors=interceptors))
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    async def route(
        self, text: str, *, tenant: str = "", user_tier: str = "", request_id: str = "",
        top_scores: int = 5, top_neighbours: int = 3, labels: Mapping[str, str] | None = None,
        policy: PolicyOptions | None = None, conversation_id: str = "",
        escalate_from: str | None = None, confidence: float | None = None,
    ) -> Decision:
        """``escalate_from`` + ``confidence``: the previous answer (from that model) was this sure; under the
        route's escalation threshold the decision is the next model up (reason ESCALATED)."""
        req = _route_request(text, tenant, user_tier, request_id, top_scores, top_neighbours, labels, policy,
                             conversation_id, escalate_from, confidence)
        try:
            return decision_from_pb((await self._stub.Route(req, timeout=self.timeout)).decision)
        except grpc.RpcError as e:
            raise _error(e) from None

    async def route_batch(
        self, texts: Sequence[str], *, tenant: str = "", user_tier: str = "", top_scores: int = 5,
        top_neighbours: int = 3, labels: Mapping[str, str] | None = None, policy: PolicyOptions | None = None,
    ) -> list[Decision]:
        md = _metadata(tenant, user_tier, "", labels)
        req = pb.RouteBatchRequest(
            queries=[pb.Query(text=t, metadata=md) for t in texts],
            options=_options(top_scores, top_neighbours, policy),
        )
        try:
            resp = await self._stub.RouteBatch(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return [decision_from_pb(d) for d in resp.decisions]

    async def info(self) -> pb.InfoResponse:
        try:
            info: pb.InfoResponse = await self._stub.Info(pb.InfoRequest(), timeout=self.timeout)
            return info
        except grpc.RpcError as e:
            raise _error(e) from None

    async def report_outcome(
        self, request_id: str, model: str, outcome: str = "ok", *, endpoint: str = "", latency_ms: float = 0.0,
        tokens_in: int = 0, tokens_out: int = 0, confidence: float | None = None, feedback: str = "",
        tenant: str = "",
    ) -> pb.ReportOutcomeResponse:
        req = _outcome_request(request_id, model, outcome, endpoint, latency_ms, tokens_in, tokens_out, confidence,
                               feedback, tenant)
        try:
            resp: pb.ReportOutcomeResponse = await self._stub.ReportOutcome(req, timeout=self.timeout)
            return resp
        except grpc.RpcError as e:
            raise _error(e) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRouterClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
