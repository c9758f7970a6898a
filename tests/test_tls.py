"""TLS and mutual TLS through the real server, with certificates made here by ``cryptography``."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from ops_helpers import issue, make_ca, write_ca
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.errors import ConfigError
from semroute.ops import OpsConfig
from semroute.ops.tls import server_credentials
from semroute.server import ServeConfig


def _call(target: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with ch:
        try:
            pb_grpc.RouterStub(ch).Route(pb.RouteRequest(text="my card was charged twice"), timeout=5)
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_mutual_tls(bundle_dir: Path, tmp_path: Path) -> None:
    ca, rogue = make_ca("semroute test CA"), make_ca("rogue CA")
    ca_pem = write_ca(ca, tmp_path / "ca.pem").read_bytes()
    srv_cert, srv_key = issue(ca, "server", tmp_path, server=True)
    good = issue(ca, "client", tmp_path)
    expired = issue(ca, "old-client", tmp_path, expired=True)
    foreign = issue(rogue, "stranger", tmp_path)
    config = ServeConfig(index=bundle_dir, port=0, watch=False, ops=OpsConfig(
        tls_cert=srv_cert, tls_key=srv_key, tls_client_ca=tmp_path / "ca.pem"))
    with InProcessServer(config) as s:
        def creds(pair: tuple[Path, Path] | None) -> grpc.ChannelCredentials:
            if pair is None:
                return grpc.ssl_channel_credentials(ca_pem)
            return grpc.ssl_channel_credentials(ca_pem, pair[1].read_bytes(), pair[0].read_bytes())

        assert _call(s.target, creds(good)) == grpc.StatusCode.OK
        assert _call(s.target, creds(None)) == grpc.StatusCode.UNAVAILABLE  # no client certificate
        assert _call(s.target, creds(expired)) == grpc.StatusCode.UNAVAILABLE
        assert _call(s.target, creds(foreign)) == grpc.StatusCode.UNAVAILABLE
        assert _call(s.target, None) == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port


def test_tls_configuration_errors(tmp_path: Path) -> None:
    ca = make_ca("ca")
    cert, key = issue(ca, "server", tmp_path, server=True)
    _, other_key = issue(ca, "other", tmp_path, server=True)
    with pytest.raises(ConfigError, match="--tls-key: the key does not belong to this certificate"):
        server_credentials(cert, other_key, None)
    with pytest.raises(ConfigError, match="--tls-cert: is not a PEM file"):
        server_credentials(key, key, None)
    with pytest.raises(ConfigError, match="give both --tls-cert and --tls-key"):
        OpsConfig(tls_cert=cert)
    with pytest.raises(ConfigError, match="--tls-client-ca: mutual TLS needs the server's own certificate"):
        OpsConfig(tls_client_ca=cert)
