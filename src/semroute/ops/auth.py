"""Authenticator: ``authorization: Bearer sr_...`` metadata -> the ApiKey it belongs to, or an error that never
contains the key.

The key file is re-read when it changes (checked at most every ``reload_s``, by stat on the request path; the
parse runs off the event loop). A file that fails validation is refused and the previous keys stay in force,
as with bundles. Revocation takes effect at the next check.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, PermissionDeniedError, UnauthenticatedError
from .keys import ApiKey, load_keys, parse_token, token_hash

log = logging.getLogger("semroute.auth")
_DUMMY = "0" * 64


class Authenticator:
    def __init__(self, path: Path, *, reload_s: float = 1.0) -> None:
        self.path = path
        self._reload_s = reload_s
        self.keys = load_keys(path)  # at start a bad key file is fatal (exit 2), like a bad route file
        self._stat = self._stat_now()
        self._next_check = time.monotonic() + reload_s
        self._reloading = False

    def _stat_now(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    async def maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check or self._reloading:
            return
        self._next_check = now + self._reload_s
        st = self._stat_now()
        if st is None or st == self._stat:
            return
        self._reloading = True
        try:
            keys = await asyncio.to_thread(load_keys, self.path)
        except ConfigError as e:
            log.error("key file change refused, the previous keys stay in force: %s", e,
                      extra={"event": "keys_refused"})
        else:
            log.warning("reloaded %d API keys from %s", len(keys), self.path, extra={"event": "keys_reloaded"})
            self.keys = keys
        finally:
            self._stat = st
            self._reloading = False

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None, rpc: str) -> ApiKey:
        header = None
        for k, v in metadata or ():
            if k == "authorization":
                header = v if isinstance(v, str) else None
                break
        if header is None:
            raise UnauthenticatedError("no API key: send metadata 'authorization: Bearer <key>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("malformed authorization metadata: expected 'Bearer <key>'")
        kid = parse_token(token.strip())
        if kid is None:
            raise UnauthenticatedError("malformed API key: expected a key of the form sr_<id>_<secret>")
        entry = self.keys.get(kid)
        # compare in constant time, and compare even for an unknown id, so timing tells nothing about the key
        ok = hmac.compare_digest(token_hash(token.strip()), entry.sha256 if entry else _DUMMY)
        if entry is None or not ok:
            raise UnauthenticatedError("invalid API key")
        if entry.revoked is not None:
            raise UnauthenticatedError(f"API key {kid} was revoked at {entry.revoked}")
        if rpc not in entry.rpcs:
            raise PermissionDeniedError(f"API key {kid} may not call {rpc} (allowed: {', '.join(entry.rpcs)})")
        return entry
