"""The API key file: one JSON object per line, each key stored as the sha256 of the token, never the token.

    {"id": "3f9a0c1b2d4e", "sha256": "…64 hex…", "tenant": "acme", "tier": "standard",
     "rpcs": ["Route", "RouteBatch", "Info"], "created": "2026-11-29T02:00:00Z", "revoked": null, "note": ""}

A token looks like ``sr_<id>_<secret>``: the id (12 hex) finds the entry without a scan, the secret (32 random
bytes) is what is checked. A plain sha256 is enough for 256-bit random secrets (a slow password hash protects
guessable passwords, which these are not) and keeps checking a key to microseconds. Optional per-key ``rate``
(e.g. "20/s") and ``burst`` override the server's rate limit for that key.

    semroute keys add --file keys.jsonl --tenant acme --tier standard     # prints the token, once
    semroute keys list --file keys.jsonl
    semroute keys revoke --file keys.jsonl 3f9a0c1b2d4e

Every change is written atomically under a lock; a running server picks it up within a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes
from ..errors import ConfigError
from .config import parse_rate

RPCS = ("Route", "RouteBatch", "Info", "Health", "Reflection")
DEFAULT_RPCS = ("Route", "RouteBatch", "Info")
TOKEN_PREFIX = "sr_"
_ID = re.compile(r"^[0-9a-f]{12}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LABEL = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_TOKEN = re.compile(r"^sr_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
_FIELDS = {"id", "sha256", "tenant", "tier", "rpcs", "created", "revoked", "note", "rate", "burst"}


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    tenant: str
    tier: str
    rpcs: tuple[str, ...]
    created: str
    revoked: str | None = None
    note: str = ""
    rate: str | None = None
    burst: float | None = None

    def to_json(self) -> str:
        d = asdict(self)
        d["rpcs"] = list(self.rpcs)
        return json.dumps(d, sort_keys=True)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> str | None:
    """The key id of a well-formed token, else None."""
    m = _TOKEN.match(token)
    return m.group(1) if m else None


def _check(obj: Any, where: str) -> ApiKey:
    def bad(field: str, msg: str, hint: str | None = None) -> ConfigError:
        return ConfigError(msg, file=where.rsplit(":", 1)[0], line=int(where.rsplit(":", 1)[1]), field=field,
                           hint=hint)

    if not isinstance(obj, dict):
        raise bad("key", "each line must be one JSON object", "manage the file with 'semroute keys'")
    extra = set(obj) - _FIELDS
    if extra:
        raise bad(sorted(extra)[0], "unknown field", f"allowed: {', '.join(sorted(_FIELDS))}")
    for f in ("id", "sha256", "tenant", "tier", "rpcs", "created"):
        if f not in obj:
            raise bad(f, "is missing")
    if not isinstance(obj["id"], str) or not _ID.match(obj["id"]):
        raise bad("id", "must be 12 lowercase hex characters", "the id is the part after 'sr_' in the token")
    if not isinstance(obj["sha256"], str) or not _HEX64.match(obj["sha256"]):
        raise bad("sha256", "must be the 64-hex sha256 of the token", "re-add the key with 'semroute keys add'")
    for f in ("tenant", "tier"):
        if not isinstance(obj[f], str) or not _LABEL.match(obj[f]):
            raise bad(f, "must be 1-64 characters of letters, digits, '_', '.', ':', '-'")
    rpcs = obj["rpcs"]
    if not isinstance(rpcs, list) or not rpcs or not all(isinstance(r, str) for r in rpcs):
        raise bad("rpcs", "must be a non-empty list of RPC names", f"choose from {', '.join(RPCS)}")
    unknown = [r for r in rpcs if r not in RPCS]
    if unknown:
        raise bad("rpcs", f"unknown RPC(s) {unknown}", f"choose from {', '.join(RPCS)}")
    if obj.get("revoked") is not None and not isinstance(obj["revoked"], str):
        raise bad("revoked", "must be null or the time of revocation")
    if obj.get("rate") is not None:
        if not isinstance(obj["rate"], str):
            raise bad("rate", "must be a rate like '20/s'")
        try:
            parse_rate(obj["rate"], field="rate")
        except ConfigError as e:
            raise bad("rate", e.reason, "write COUNT/UNIT, e.g. 20/s or 600/min") from None
    if obj.get("burst") is not None and (not isinstance(obj["burst"], int | float) or obj["burst"] < 1):
        raise bad("burst", "must be a number >= 1")
    return ApiKey(id=obj["id"], sha256=obj["sha256"], tenant=obj["tenant"], tier=obj["tier"], rpcs=tuple(rpcs),
                  created=str(obj["created"]), revoked=obj.get("revoked"), note=str(obj.get("note") or ""),
                  rate=obj.get("rate"), burst=obj.get("burst"))


def load_keys(path: Path) -> dict[str, ApiKey]:
    """Parse and validate the key file; ConfigError with file:line: field: message on the first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such key file", file=path, field="--keys",
                          hint=f"create it with 'semroute keys add --file {path} --tenant T --tier T'") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read ({e})", file=path, field="--keys") from None
    keys: dict[str, ApiKey] = {}
    first_line: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ConfigError(f"not valid JSON ({e})", file=path, line=n,
                              hint="one JSON object per line; manage the file with 'semroute keys'") from None
        k = _check(obj, f"{path}:{n}")
        if k.id in keys:
            raise ConfigError(f"duplicate key id {k.id} (first on line {first_line[k.id]})", file=path, line=n,
                              field="id", hint="each key needs its own id; remove one of the lines")
        keys[k.id] = k
        first_line[k.id] = n
    return keys


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two concurrent 'keys add' must not lose one another's key
        yield


def _write(path: Path, keys: dict[str, ApiKey]) -> None:
    atomic_write_bytes(path, "".join(k.to_json() + "\n" for k in keys.values()).encode())
    path.chmod(0o600)


def add_key(path: Path, *, tenant: str, tier: str, rpcs: tuple[str, ...] = DEFAULT_RPCS, note: str = "",
            rate: str | None = None, burst: float | None = None) -> tuple[str, ApiKey]:
    """Create a key; returns (token, entry). The token is shown once and stored only as its hash."""
    with _locked(path):
        keys = load_keys(path) if path.exists() else {}
        kid = secrets.token_hex(6)
        while kid in keys:
            kid = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
        obj = {"id": kid, "sha256": token_hash(token), "tenant": tenant, "tier": tier, "rpcs": list(rpcs),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "revoked": None, "note": note,
               "rate": rate, "burst": burst}
        entry = _check(obj, f"{path}:{len(keys) + 1}")  # the same checks a server applies
        keys[kid] = entry
        _write(path, keys)
    return token, entry


def revoke_key(path: Path, key_id: str) -> ApiKey:
    with _locked(path):
        keys = load_keys(path)
        if key_id.startswith(TOKEN_PREFIX):  # a whole token pasted: take its id, never print the token
            key_id = parse_token(key_id) or ""
        if key_id not in keys:
            raise ConfigError(f"no key with id {key_id!r}", file=path, hint="see 'semroute keys list'")
        k = keys[key_id]
        if k.revoked is None:
            keys[key_id] = k = ApiKey(**{**asdict(k), "rpcs": k.rpcs,
                                         "revoked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            _write(path, keys)
    return k
