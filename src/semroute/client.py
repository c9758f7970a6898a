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

import grpc

from ._proto.semroute.v1 import router_pb2 as pb
from ._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from .errors import BundleError, OverloadedError, PolicyDeniedError, RequestError, SemrouteError, UnavailableError
from .scoring import Decision
from .server.convert import decision_from_pb

_DEFAULT_TIMEOUT = 5.0


def _error(e: grpc.RpcError) -> SemrouteError:
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, msg = details.partition(": ")
        return RequestError(field, msg or details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PolicyDeniedError(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OverloadedError(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(f"{code.name}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return BundleError(details)
    return SemrouteError(f"{code.name}: {details}")


def _metadata(
    tenant: str, user_tier: str, request_id: str, labels: Mapping[str, str] | None = None
) -> pb.RequestMetadata:
    return pb.RequestMetadata(tenant=tenant, user_tier=user_tier, request_id=request_id, labels=labels or {})


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


class RouterClient:
    """Blocking client. ``timeout`` is the per-call deadline in seconds."""

    def __init__(self, target: str, *, timeout: float = _DEFAULT_TIMEOUT) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    def route(
        self, text: str, *, tenant: str = "", user_tier: str = "", request_id: str = "",
        top_scores: int = 5, top_neighbours: int = 3, labels: Mapping[str, str] | None = None,
        policy: PolicyOptions | None = None,
    ) -> Decision:
        req = pb.RouteRequest(
            text=text, metadata=_metadata(tenant, user_tier, request_id, labels),
            options=_options(top_scores, top_neighbours, policy),
        )
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

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRouterClient:
    """asyncio client; one channel shared by all calls (HTTP/2 multiplexes them)."""

    def __init__(self, target: str, *, timeout: float = _DEFAULT_TIMEOUT) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    async def route(
        self, text: str, *, tenant: str = "", user_tier: str = "", request_id: str = "",
        top_scores: int = 5, top_neighbours: int = 3, labels: Mapping[str, str] | None = None,
        policy: PolicyOptions | None = None,
    ) -> Decision:
        req = pb.RouteRequest(
            text=text, metadata=_metadata(tenant, user_tier, request_id, labels),
            options=_options(top_scores, top_neighbours, policy),
        )
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

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRouterClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
