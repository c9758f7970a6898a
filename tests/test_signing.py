"""Signed bundles: sign, verify at start (exit 3) and at reload (the old bundle keeps serving)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.errors import BundleError, ConfigError
from semroute.ops import OpsConfig
from semroute.server import ServeConfig
from semroute.signing import BundleVerifier, keygen, sign_bundle


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semroute.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = keygen(d / "good")
    _, other_pub = keygen(d / "other")
    return priv, pub, other_pub


@pytest.fixture()
def signed(bundle_dir: Path, tmp_path: Path, keys: tuple[Path, Path, Path]) -> Path:
    b = tmp_path / "bundle"
    shutil.copytree(bundle_dir, b)
    sign_bundle(b, keys[0])
    return b


def test_sign_and_verify_and_every_kind_of_refusal(signed: Path, keys: tuple[Path, Path, Path],
                                                    bundle_dir: Path, tmp_path: Path) -> None:
    priv, pub, other_pub = keys
    v = BundleVerifier([pub]).verify(signed)
    assert v.version == json.loads((signed / "manifest.json").read_text())["version"]
    with pytest.raises(BundleError, match="not a --trusted-key"):
        BundleVerifier([other_pub]).verify(signed)
    # altered: a file the manifest does not even hash (encoder.json) is still covered by the signature
    meta = signed / "encoder" / "encoder.json"
    original = meta.read_bytes()
    meta.write_bytes(original + b" ")
    with pytest.raises(BundleError, match=r"changed since signing: encoder/encoder\.json"):
        BundleVerifier([pub]).verify(signed)
    meta.write_bytes(original)
    (signed / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"changed since signing: extra\.bin"):
        BundleVerifier([pub]).verify(signed)
    (signed / "extra.bin").unlink()
    # a forged signature value
    doc = json.loads((signed / "signature.json").read_text())
    good_sig = doc["signature"]
    doc["signature"] = good_sig[:-4] + ("AAA=" if not good_sig.endswith("AAA=") else "BBB=")
    (signed / "signature.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="the signature itself is invalid"):
        BundleVerifier([pub]).verify(signed)
    # a signature file copied from another bundle
    other = tmp_path / "other"
    shutil.copytree(bundle_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = "20990101T000000Z-0000000000"
    (other / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(signed / "signature.json", other / "signature.json")
    with pytest.raises(BundleError, match=r"signature is for bundle .* but this bundle is '20990101T000000Z"):
        BundleVerifier([pub]).verify(other)
    (other / "signature.json").unlink()
    with pytest.raises(BundleError, match="bundle is not signed"):
        BundleVerifier([pub]).verify(other)
    with pytest.raises(ConfigError, match="exists already"):
        keygen(priv.with_suffix(""))
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        BundleVerifier([tmp_path / "bad.pub"])


def test_openssl_style_keys_and_cli(signed: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    k = Ed25519PrivateKey.generate()  # what 'openssl genpkey -algorithm ed25519' writes: PKCS#8 PEM
    (tmp_path / "o.key").write_bytes(k.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "o.pub").write_bytes(k.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    r = _cli("sign", str(signed), "--key", str(tmp_path / "o.key"))
    assert r.returncode == 0, r.stderr
    assert BundleVerifier([tmp_path / "o.pub"]).verify(signed).version


def test_serve_refuses_unsigned_and_altered_bundles_with_exit_3(signed: Path, bundle_dir: Path,
                                                                keys: tuple[Path, Path, Path]) -> None:
    _, pub, _ = keys
    r = _cli("serve", "--index", str(bundle_dir), "--port", "0", "--trusted-key", str(pub))
    assert r.returncode == 3 and "bundle is not signed" in r.stderr, r.stderr
    with (signed / "routes.json").open("a") as f:
        f.write(" ")
    r = _cli("serve", "--index", str(signed), "--port", "0", "--trusted-key", str(pub))
    assert r.returncode == 3 and "changed since signing: routes.json" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_reload_refuses_unsigned_bundle_and_keeps_serving(signed: Path, bundle_dir: Path, tmp_path: Path,
                                                          keys: tuple[Path, Path, Path]) -> None:
    priv, pub, _ = keys
    config = ServeConfig(index=signed, port=0, watch=True, watch_interval=0.2,
                         ops=OpsConfig(trusted_keys=(pub,)))
    with InProcessServer(config) as s, grpc.insecure_channel(s.target) as ch:
        stub = pb_grpc.RouterStub(ch)
        v0 = stub.Info(pb.InfoRequest(), timeout=5).index_version

        def new_version(sign: bool) -> str:
            staged = tmp_path / f"staged-{time.monotonic_ns()}"
            shutil.copytree(bundle_dir, staged)
            m = json.loads((staged / "manifest.json").read_text())
            m["version"] = f"20990101T000000Z-{time.monotonic_ns() % 10**10:010d}"
            (staged / "manifest.json").write_text(json.dumps(m))
            if sign:
                sign_bundle(staged, priv)
            shutil.rmtree(signed)
            staged.rename(signed)
            return str(m["version"])

        new_version(sign=False)
        time.sleep(1.5)
        assert stub.Info(pb.InfoRequest(), timeout=5).index_version == v0  # refused: the old one serves
        assert stub.Route(pb.RouteRequest(text="my card was charged twice"), timeout=5).decision.model
        v2 = new_version(sign=True)
        deadline = time.monotonic() + 60
        while stub.Info(pb.InfoRequest(), timeout=5).index_version != v2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stub.Info(pb.InfoRequest(), timeout=5).index_version == v2
