"""Ed25519 signatures over whole bundles.

    semroute keygen --out ops/bundle-signing          # ops/bundle-signing.key (private), .pub (public), PEM
    semroute sign bundle/ --key ops/bundle-signing.key    # writes bundle/signature.json
    semroute serve --index bundle/ --trusted-key ops/bundle-signing.pub

What is signed: the bundle's version, the sha256 of its manifest, and the sha256 of every other file in the
directory (encoder included), so nothing the server reads can change without breaking the signature. Verification
recomputes every hash and requires the exact same set of files: an extra, missing or altered file is refused, and
so is a signature written for another bundle (its version or manifest hash differ). Keys are PEM (PKCS#8 private,
SubjectPublicKeyInfo public), so ``openssl genpkey -algorithm ed25519`` keys work too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._fs import atomic_write_bytes
from .encoder import file_sha256
from .errors import BundleError, ConfigError

SIGNATURE_FILE = "signature.json"
_FORMAT = 1
_DOMAIN = b"semroute bundle signature v1\n"  # so a signature can never be replayed as some other kind of message


@dataclass(frozen=True)
class Verified:
    """What a good signature vouched for."""

    version: str
    manifest_sha256: str
    key_id: str


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _bundle_files(bundle: Path) -> dict[str, str]:
    """sha256 of every regular file under ``bundle`` but the signature, by relative POSIX path."""
    out = {}
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        if rel == SIGNATURE_FILE or p.is_dir():
            continue
        if p.is_symlink() or not p.is_file():
            raise BundleError(f"{bundle}: {rel} is not a regular file; a signed bundle holds only regular files")
        out[rel] = file_sha256(p)
    return out


def _payload(version: str, files: dict[str, str]) -> bytes:
    doc = {"version": version, "files": files}
    return _DOMAIN + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _manifest_version(bundle: Path) -> str:
    try:
        return str(json.loads((bundle / "manifest.json").read_text())["version"])
    except FileNotFoundError:
        raise BundleError(f"{bundle}: not a bundle (no manifest.json); build it with 'semroute build-index'") from None
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{bundle}/manifest.json: corrupt manifest ({e}); rebuild the bundle") from e


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} ({e.strerror})", file=path,
                          hint="create a key pair with 'semroute keygen --out NAME'") from None


def load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(_read_pem(path, "private key"), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"not an unencrypted PEM private key ({e})", file=path,
                          hint="create one with 'semroute keygen' or 'openssl genpkey -algorithm ed25519'") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("is not an Ed25519 key", file=path, hint="bundles are signed with Ed25519 keys only")
    return key


def load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(_read_pem(path, "public key"))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"not a PEM public key ({e})", file=path,
                          hint="export it with 'semroute keygen' or 'openssl pkey -in KEY -pubout'") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("is not an Ed25519 public key", file=path, hint="bundles are signed with Ed25519 keys")
    return key


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return bytes(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def keygen(out: Path) -> tuple[Path, Path]:
    """Write ``OUT.key`` (private, mode 0600) and ``OUT.pub``. Refuses to overwrite an existing private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    priv_path, pub_path = Path(f"{out}.key"), Path(f"{out}.pub")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL + 0600: never replace a key someone depends on, never let it be world-readable even briefly
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError("exists already; choose another --out or remove it", file=priv_path) from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    atomic_write_bytes(pub_path, key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def sign_bundle(bundle: Path, key_path: Path) -> Verified:
    """Sign ``bundle`` in place (writes ``signature.json`` atomically; the bundle's own files are untouched)."""
    from .bundle import load_bundle

    key = load_private_key(key_path)
    load_bundle(bundle)  # never vouch for a bundle that does not load (corrupt, or altered since its manifest)
    version = _manifest_version(bundle)
    files = _bundle_files(bundle)
    sig = key.sign(_payload(version, files))
    kid = key_id(_raw_public(key.public_key()))
    doc = {
        "format": _FORMAT,
        "algorithm": "ed25519",
        "key_id": kid,
        "bundle_version": version,
        "manifest_sha256": files["manifest.json"],
        "files": files,
        "signature": base64.b64encode(sig).decode(),
    }
    atomic_write_bytes(bundle / SIGNATURE_FILE, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return Verified(version, files["manifest.json"], kid)


class BundleVerifier:
    """Checks a bundle's signature against one or more trusted public keys (several allow key rotation)."""

    def __init__(self, public_keys: list[Path]) -> None:
        if not public_keys:
            raise ValueError("at least one trusted key is required")
        self._keys = {key_id(_raw_public(k)): k for k in (load_public_key(p) for p in public_keys)}

    def verify(self, bundle: Path) -> Verified:
        """Raise BundleError saying what is wrong unless ``bundle`` is exactly what a trusted key signed."""
        from cryptography.exceptions import InvalidSignature

        sig_path = bundle / SIGNATURE_FILE
        try:
            doc = json.loads(sig_path.read_text())
        except FileNotFoundError:
            raise BundleError(f"{bundle}: bundle is not signed (no {SIGNATURE_FILE}) and --trusted-key requires "
                              f"a signature; sign it with 'semroute sign {bundle} --key KEY'") from None
        except (OSError, ValueError) as e:
            raise BundleError(f"{sig_path}: unreadable signature file ({e}); sign the bundle again") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("algorithm") != "ed25519":
            raise BundleError(f"{sig_path}: not a semroute ed25519 signature (format 1); sign the bundle again")
        version = _manifest_version(bundle)
        if doc.get("bundle_version") != version:
            raise BundleError(
                f"{sig_path}: signature is for bundle {doc.get('bundle_version')!r}, but this bundle is {version!r} "
                f"(a signature copied from another bundle); sign this bundle with 'semroute sign {bundle} --key KEY'"
            )
        key = self._keys.get(str(doc.get("key_id")))
        if key is None:
            raise BundleError(f"{sig_path}: signed by key {doc.get('key_id')!r}, which is not a --trusted-key "
                              f"(trusted: {', '.join(sorted(self._keys))})")
        files = _bundle_files(bundle)
        try:
            key.verify(base64.b64decode(str(doc.get("signature")), validate=True), _payload(version, files))
        except (InvalidSignature, ValueError):
            signed: dict[str, Any] = doc["files"] if isinstance(doc.get("files"), dict) else {}
            changed = sorted(n for n in files.keys() | signed.keys() if files.get(n) != signed.get(n))
            what = f"changed since signing: {', '.join(changed)}" if changed else "the signature itself is invalid"
            raise BundleError(f"{bundle}: bad signature ({what}); refusing to serve it") from None
        return Verified(version, files["manifest.json"], str(doc["key_id"]))
