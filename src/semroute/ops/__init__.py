"""Production operations around the Router service: API keys and TLS, rate limits, the audit trail, tracing and
signed bundles. Configured by one ``OpsConfig``; wired into the server by ``build_ops`` (see wiring.py) as one
gRPC interceptor plus a bundle loader, so the service itself knows nothing about them.

Nothing here is imported unless a feature is on: the default server runs exactly as without this package.
"""

from .config import OpsConfig, parse_rate

__all__ = ["OpsConfig", "parse_rate"]
