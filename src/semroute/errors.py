"""The exception tree, and the one table that maps it to gRPC status codes and CLI exit codes.

    SemrouteError
    ├── ConfigError              route files: file, line, field, how to fix it
    ├── DataError                labelled JSONL for eval/calibrate: file, line, what is wrong
    ├── EncoderError             encoder files missing or unusable, export failed
    ├── BundleError              index bundle missing, corrupt, or built for another encoder/format
    ├── RequestError             a request a client sent is invalid (names the field)
    ├── PolicyDeniedError        the routing policy refuses the request (names the rule, or why no model is eligible)
    ├── OverloadedError          admission control refused the request (queue full)
    │   └── RateLimitedError         the caller's key or tenant is over its rate limit (carries the retry delay)
    ├── UnauthenticatedError     no API key, or a malformed, unknown or revoked one (never echoes the key)
    ├── PermissionDeniedError    a valid key asked for an RPC, tenant or tier it is not bound to
    └── UnavailableError         not serving yet, or shutting down
        └── DeadlineExceededError    the client's deadline passed before the query reached the encoder

Everything the code raises on purpose is one of these; anything else reaching the gRPC layer is a bug and
becomes INTERNAL.
"""

from __future__ import annotations

from pathlib import Path

import grpc


class SemrouteError(Exception):
    """Base class of every error semroute raises on purpose."""


class ConfigError(SemrouteError):
    """A route file is invalid. Carries where (file, line, field) so the message can point at it."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        self.reason = message
        where = self.file or ""
        if line is not None:
            where += f":{line}"
        parts = [f"{where}: " if where else ""]
        if field:
            parts.append(f"{field}: ")
        parts.append(message)
        if hint:
            parts.append(f" ({hint})")
        super().__init__("".join(parts))


class DataError(SemrouteError):
    """A labelled data file (JSONL) is malformed."""


class EncoderError(SemrouteError):
    """The encoder cannot be loaded or exported."""


class BundleError(SemrouteError):
    """An index bundle is missing, corrupt, or does not match this semroute/encoder."""


class RequestError(SemrouteError):
    """A client request is invalid. ``field`` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class PolicyDeniedError(SemrouteError):
    """The routing policy refuses this request: a ``deny`` rule fired (the message names it), or no candidate
    model is eligible and the policy declares ``no_eligible: {action: deny}``."""


class OverloadedError(SemrouteError):
    """Too many requests are queued; the caller should back off and retry."""


class RateLimitedError(OverloadedError):
    """The caller is over its rate limit. ``retry_after_s``: when the bucket will hold enough tokens (None: never,
    the request costs more than the bucket holds)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UnauthenticatedError(SemrouteError):
    """The request carries no valid API key. Messages never contain the key."""


class PermissionDeniedError(SemrouteError):
    """The API key is valid but not allowed to do what was asked."""


class UnavailableError(SemrouteError):
    """The server is not ready (still loading) or is shutting down."""


class DeadlineExceededError(UnavailableError):
    """The request's deadline had passed when the server got to it, so nothing was encoded for it."""


# One table: error class -> (gRPC status, CLI exit code). Looked up along the MRO so subclasses inherit.
_TABLE: dict[type[SemrouteError], tuple[grpc.StatusCode, int]] = {
    ConfigError: (grpc.StatusCode.INVALID_ARGUMENT, 2),
    DataError: (grpc.StatusCode.INVALID_ARGUMENT, 2),
    RequestError: (grpc.StatusCode.INVALID_ARGUMENT, 2),
    PolicyDeniedError: (grpc.StatusCode.PERMISSION_DENIED, 6),
    BundleError: (grpc.StatusCode.FAILED_PRECONDITION, 3),
    EncoderError: (grpc.StatusCode.FAILED_PRECONDITION, 3),
    OverloadedError: (grpc.StatusCode.RESOURCE_EXHAUSTED, 4),
    UnavailableError: (grpc.StatusCode.UNAVAILABLE, 5),
    UnauthenticatedError: (grpc.StatusCode.UNAUTHENTICATED, 6),
    PermissionDeniedError: (grpc.StatusCode.PERMISSION_DENIED, 6),
    DeadlineExceededError: (grpc.StatusCode.DEADLINE_EXCEEDED, 5),
    SemrouteError: (grpc.StatusCode.INTERNAL, 1),
}


def _lookup(exc: SemrouteError) -> tuple[grpc.StatusCode, int]:
    for cls in type(exc).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]
    return _TABLE[SemrouteError]


def grpc_status(exc: SemrouteError) -> grpc.StatusCode:
    """The gRPC status code a server answers with for ``exc``."""
    return _lookup(exc)[0]


def exit_code(exc: SemrouteError) -> int:
    """The process exit code the CLI uses for ``exc``."""
    return _lookup(exc)[1]
