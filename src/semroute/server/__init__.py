"""The gRPC server: ``serve(ServeConfig(...))``. See app.py for the lifecycle, batcher.py for micro-batching."""

from .app import ServeConfig, serve

__all__ = ["ServeConfig", "serve"]
