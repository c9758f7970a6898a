"""Server TLS credentials: ``--tls-cert``/``--tls-key`` for TLS, plus ``--tls-client-ca`` for mutual TLS (a
client must present a certificate signed by that CA, within its validity period, or the handshake fails)."""

from __future__ import annotations

from pathlib import Path

import grpc

from ..errors import ConfigError


def _read(path: Path, flag: str, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read ({e.strerror})", file=path, field=flag) from None
    if marker not in data:
        raise ConfigError(f"is not a PEM file holding a {marker.decode()}", file=path, field=flag,
                          hint="give PEM files (-----BEGIN ...-----)")
    return data


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    cert_pem = _read(cert, "--tls-cert", b"CERTIFICATE")
    key_pem = _read(key, "--tls-key", b"PRIVATE KEY")
    ca_pem = _read(client_ca, "--tls-client-ca", b"CERTIFICATE") if client_ca else None
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        leaf = x509.load_pem_x509_certificate(cert_pem)
        private = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"certificate or key does not parse ({e})", file=cert, field="--tls-cert/--tls-key") from None
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    der, spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != private.public_key().public_bytes(der, spki):
        raise ConfigError("the key does not belong to this certificate", file=key, field="--tls-key",
                          hint="give the private key the certificate was issued for")
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                       require_client_auth=ca_pem is not None)

