"""A bare Route server for benchmarks.grpc_floor: ``python -m benchmarks._floor_server sync|aio BUNDLE``.

No validation, policy options, feedback, metrics or interceptors: what a Python gRPC server costs with nothing of
semroute's serving code around the decision. ``metadata.tenant`` says what the handler does before answering:
``none`` (a fixed, real-sized decision), ``encode`` (the int8 encoder on the text, then the fixed decision) or
``decide`` (``Router.route`` and ``decision_to_pb``, on the handler's thread: the event loop for ``aio``, a pool
thread for ``sync``). ``timings.total_ns`` is the handler's own time."""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent import futures
from typing import Any

import grpc

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute.index import set_threads
from semroute.router import Router
from semroute.server.convert import decision_to_pb


def main() -> None:
    kind, bundle = sys.argv[1], sys.argv[2]
    router = Router.load(bundle, threads=1)
    fixed = decision_to_pb(router.route("how do I get a refund"))

    def route(req: pb.RouteRequest, ctx: Any) -> pb.RouteResponse:
        t = time.perf_counter_ns()
        if req.metadata.tenant == "decide":
            d = decision_to_pb(router.route(req.text))
        else:
            if req.metadata.tenant == "encode":
                router.encoder.encode([req.text])
            d = pb.Decision()
            d.CopyFrom(fixed)
        d.timings.total_ns = time.perf_counter_ns() - t
        return pb.RouteResponse(decision=d)

    async def aroute(req: pb.RouteRequest, ctx: Any) -> pb.RouteResponse:
        return route(req, ctx)

    def handlers(fn: Any) -> Any:
        h = grpc.unary_unary_rpc_method_handler(fn, request_deserializer=pb.RouteRequest.FromString,
                                                response_serializer=pb.RouteResponse.SerializeToString)
        return (grpc.method_handlers_generic_handler("semroute.v1.Router", {"Route": h}),)

    set_threads(1)
    if kind == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, initializer=set_threads, initargs=(1,)))
        server.add_generic_rpc_handlers(handlers(route))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        server.wait_for_termination()
        return

    async def serve() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers(aroute))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
