"""semroute: semantic routing for LLM traffic.

    >>> from semroute import Router
    >>> Router.load("bundle/").route("translate this to French").model
"""

__version__ = "0.1.0"

from .errors import (
    BundleError,
    ConfigError,
    DataError,
    DeadlineExceededError,
    EncoderError,
    OverloadedError,
    PolicyDeniedError,
    RequestError,
    SemrouteError,
    UnavailableError,
)
from .policy.types import RequestContext, RuntimeView
from .router import Router
from .routes import RouteSet, load_routes
from .scoring import Decision, Reason

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "DeadlineExceededError",
    "Decision",
    "EncoderError",
    "OverloadedError",
    "PolicyDeniedError",
    "Reason",
    "RequestContext",
    "RequestError",
    "RouteSet",
    "Router",
    "RuntimeView",
    "SemrouteError",
    "UnavailableError",
    "__version__",
    "load_routes",
]
