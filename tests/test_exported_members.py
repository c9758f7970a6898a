import semroute


def test_public_api_is_pinned() -> None:
    assert semroute.__all__ == sorted(semroute.__all__)
    assert set(semroute.__all__) == {
        "BundleError", "ConfigError", "DataError", "DeadlineExceededError", "Decision", "EncoderError",
        "OverloadedError", "PolicyDeniedError", "Reason", "RequestContext", "RequestError", "RouteSet", "Router",
        "RuntimeView", "SemrouteError", "UnavailableError",
        "__version__", "load_routes",
    }
    for name in semroute.__all__:
        assert hasattr(semroute, name)
