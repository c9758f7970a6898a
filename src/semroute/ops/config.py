"""OpsConfig: every operations setting of ``semroute serve`` in one validated object (light imports only)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError

AuditText = Literal["hmac", "full", "none"]
AuditOnError = Literal["keep-serving", "fail-closed"]
RateBy = Literal["key", "tenant"]
OPEN_SERVICES = {"health": "grpc.health.v1.Health", "reflection": "grpc.reflection.v1alpha.ServerReflection"}

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNIT = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str, *, field: str = "--rate-limit") -> tuple[float, float]:
    """'100/s', '600/min', '5000/hour' -> (tokens per second, count per unit: the default burst)."""
    m = _RATE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{text!r} is not a rate", field=field, hint="write COUNT/UNIT, e.g. 100/s, 600/min, 5000/h")
    count = float(m.group(1))
    return count / _UNIT[m.group(2)], count


@dataclass(frozen=True)
class OpsConfig:
    # signed bundles
    trusted_keys: tuple[Path, ...] = ()
    # authentication
    keys_file: Path | None = None
    open_services: frozenset[str] = frozenset(OPEN_SERVICES)  # reachable without a key: health, reflection
    keys_reload_s: float = 1.0
    # TLS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # rate limits
    rate_limit: str | None = None
    rate_burst: float | None = None
    rate_by: RateBy = "key"
    bucket_store: Any = None  # a ratelimit.BucketStore; default in-process
    # audit trail
    audit_log: Path | None = None
    audit_text: AuditText = "hmac"
    audit_key: Path | None = None
    audit_max_bytes: int = 100 * 1024 * 1024
    audit_on_error: AuditOnError = "keep-serving"
    audit_queue: int = 10_000
    # tracing
    otel_endpoint: str | None = None
    tracer_provider: Any = None  # an opentelemetry TracerProvider (tests, embedding); else built from the endpoint

    def __post_init__(self) -> None:
        unknown = set(self.open_services) - set(OPEN_SERVICES)
        if unknown:
            raise ConfigError(f"unknown service(s) {sorted(unknown)}", field="--auth-open",
                              hint=f"choose from {', '.join(sorted(OPEN_SERVICES))}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("give both --tls-cert and --tls-key, or neither", field="--tls-cert/--tls-key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("mutual TLS needs the server's own certificate too", field="--tls-client-ca",
                              hint="add --tls-cert and --tls-key")
        if self.rate_limit is not None:
            parse_rate(self.rate_limit)
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ConfigError("must be at least 1", field="--rate-burst")
        if self.rate_by == "key" and self.rate_limit is not None and self.keys_file is None:
            raise ConfigError("limiting per key needs API keys", field="--rate-limit-by",
                              hint="add --keys FILE, or limit per tenant with --rate-limit-by tenant")
        if self.audit_max_bytes < 4096:
            raise ConfigError("must be at least 4096", field="--audit-max-bytes")
        if self.audit_queue < 1:
            raise ConfigError("must be at least 1", field="--audit-queue")

    @property
    def intercepts(self) -> bool:
        """Whether any per-request feature is on (otherwise no interceptor is installed at all)."""
        return bool(self.keys_file or self.rate_limit or self.audit_log or self.otel_endpoint
                    or self.tracer_provider is not None)
