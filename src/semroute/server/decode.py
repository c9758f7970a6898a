"""Requests whose bytes are not a valid message: answered INVALID_ARGUMENT, counted, logged at most once a minute.

grpc.aio calls a method's request deserializer before any servicer code runs; when it raises (random bytes, a
string field that is not UTF-8) grpc answers UNKNOWN and logs a traceback for every such request, and no metric
sees it. So the Router service is registered here with lenient deserializers that turn a failed parse into an
``Undecodable`` value, and each method is wrapped to answer that value with INVALID_ARGUMENT.

The handlers are built from the service descriptor, so RPCs added to the proto are registered the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from .._proto.semroute.v1 import router_pb2 as pb
from ..errors import RequestError
from .metrics import Metrics

log = logging.getLogger("semroute.server")
LOG_INTERVAL_S = 60.0
SERVICE = pb.DESCRIPTOR.services_by_name["Router"]


class Undecodable:
    """Stands in for a request message whose bytes did not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def lenient(cls: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as e:  # DecodeError, or whatever else the parser raises: the client's bytes are bad
            return Undecodable(str(e).replace(f"Error parsing message with type '{cls.DESCRIPTOR.full_name}': ",
                                              "") or type(e).__name__)

    return deserialize


class RateLimitedLog:
    """One warning per ``interval`` seconds at most; the lines in between are counted, not written."""

    def __init__(self, interval: float = LOG_INTERVAL_S) -> None:
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def warn(self, msg: str, **extra: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        log.warning("%s (%d more like it since the last such line; at most one line per %.0fs)", msg,
                    self._suppressed, self._interval, extra={**extra, "suppressed": self._suppressed})
        self._suppressed = 0
        self._next = now + self._interval


def add_router_service(server: grpc.aio.Server, servicer: Any, metrics: Metrics,
                       log_interval: float = LOG_INTERVAL_S) -> None:
    """Register ``servicer``'s methods for every RPC of semroute.v1.Router, with lenient request parsing."""
    limiter = RateLimitedLog(log_interval)
    handlers = {m.name: _handler(m, getattr(servicer, m.name), metrics, limiter) for m in SERVICE.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))


def _handler(method: MethodDescriptor, impl: Any, metrics: Metrics, limiter: RateLimitedLog) -> grpc.RpcMethodHandler:
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    serialize = response_cls.SerializeToString
    if method.client_streaming:  # none today; a stream's messages keep grpc's own parsing
        if method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(impl, request_deserializer=request_cls.FromString,
                                                         response_serializer=serialize)
        return grpc.stream_unary_rpc_method_handler(impl, request_deserializer=request_cls.FromString,
                                                    response_serializer=serialize)
    name, full = method.name, method.input_type.full_name
    undecodable = metrics.undecodable.labels(name)
    invalid = metrics.requests.labels(name, grpc.StatusCode.INVALID_ARGUMENT.name)

    async def refuse(request: Undecodable, context: grpc.aio.ServicerContext) -> None:
        undecodable.inc()
        invalid.inc()
        limiter.warn(f"undecodable {name} request ({request.reason}): answered INVALID_ARGUMENT",
                     event="undecodable_request", method=name)
        msg = str(RequestError("request", f"is not a valid {full} ({request.reason}); string fields must be "
                                          "UTF-8 and the body a serialized message"))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)

    if method.server_streaming:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            async for item in impl(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=lenient(request_cls),
                                                    response_serializer=serialize)

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await refuse(request, context)
        return await impl(request, context)

    return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=lenient(request_cls),
                                               response_serializer=serialize)
