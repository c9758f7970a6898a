"""The operations commands of the ``semroute`` CLI (keygen, sign, keys, audit) and the ``serve`` options that
build an OpsConfig. Registered by cli.py; heavy modules are imported inside the commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .._envvars import EnvGroup
from .config import OpsConfig

F = TypeVar("F", bound=Callable[..., Any])
_P = click.Path(path_type=Path)
_SERVE_OPTIONS = [
    click.option("--trusted-key", "trusted_keys", multiple=True, type=_P,
                 help="Serve only bundles signed by this Ed25519 public key (repeat for several)."),
    click.option("--keys", "keys_file", type=_P, help="API key file: clients must send 'authorization: Bearer KEY'."),
    click.option("--auth-open", "open_services", default="health,reflection", show_default=True,
                 help="Services reachable without a key, comma-separated (health, reflection; '' for none)."),
    click.option("--tls-cert", type=_P, help="Server certificate (PEM): serve TLS."),
    click.option("--tls-key", type=_P, help="Server private key (PEM)."),
    click.option("--tls-client-ca", type=_P, help="CA (PEM) client certificates must chain to: mutual TLS."),
    click.option("--rate-limit", help="Token bucket per key (or tenant), e.g. 100/s or 600/min (default: none)."),
    click.option("--rate-burst", type=float, help="Bucket size (default: the COUNT of --rate-limit)."),
    click.option("--rate-limit-by", "rate_by", type=click.Choice(["key", "tenant"]), default="key",
                 show_default=True, help="One bucket per API key, or per tenant."),
    click.option("--audit-log", type=_P, help="Append every decision to this hash-chained JSON-lines file."),
    click.option("--audit-text", type=click.Choice(["hmac", "full", "none"]), default="hmac", show_default=True,
                 help="Query text in the audit log: keyed HMAC, the text itself, or nothing."),
    click.option("--audit-key", type=_P, help="HMAC key file for --audit-text hmac (default: LOG.key, created)."),
    click.option("--audit-max-bytes", type=int, default=100 * 1024 * 1024, show_default=True,
                 help="Rotate the audit log past this size."),
    click.option("--audit-on-error", type=click.Choice(["keep-serving", "fail-closed"]), default="keep-serving",
                 show_default=True, help="When the audit log cannot be written: serve and alert, or refuse."),
    click.option("--otel-endpoint", help="Export OpenTelemetry traces over OTLP/gRPC here (needs semroute[otel])."),
]


def ops_options(fn: F) -> F:
    for opt in reversed(_SERVE_OPTIONS):
        fn = opt(fn)
    return fn


def pop_ops_config(options: dict[str, Any]) -> OpsConfig | None:
    """Take the ops options out of ``options`` (the rest are ServeConfig's); None when every feature is off."""
    names = ["trusted_keys", "keys_file", "open_services", "tls_cert", "tls_key", "tls_client_ca", "rate_limit",
             "rate_burst", "rate_by", "audit_log", "audit_text", "audit_key", "audit_max_bytes", "audit_on_error",
             "otel_endpoint"]
    values = {n: options.pop(n) for n in names}
    values["trusted_keys"] = tuple(values["trusted_keys"])
    values["open_services"] = frozenset(s.strip() for s in values["open_services"].split(",") if s.strip())
    config = OpsConfig(**values)  # validates even when unused: a lone --tls-key is still an error
    on = ("trusted_keys", "keys_file", "tls_cert", "rate_limit", "audit_log", "otel_endpoint")
    return config if any(values[n] for n in on) else None


def _errors(fn: F) -> F:
    from ..cli import _errors as wrap

    return wrap(fn)


@click.command()
@click.option("--out", required=True, type=_P, help="Writes OUT.key (private, 0600) and OUT.pub.")
def keygen(out: Path) -> None:
    """Create an Ed25519 key pair for signing bundles."""
    from ..signing import keygen as make

    priv, pub = _errors(make)(out)
    click.echo(f"wrote {priv} (private: keep it off the serving hosts) and {pub} (give to --trusted-key)")


@click.command()
@click.argument("bundle", type=_P)
@click.option("--key", required=True, type=_P, help="Ed25519 private key (PEM).")
def sign(bundle: Path, key: Path) -> None:
    """Sign BUNDLE (writes BUNDLE/signature.json; the bundle's own files are not touched)."""
    from ..signing import sign_bundle

    v = _errors(sign_bundle)(bundle, key)
    click.echo(f"signed {bundle} (version {v.version}) with key {v.key_id}")


@click.group(cls=EnvGroup)
def keys() -> None:
    """Manage API keys (stored hashed; a running server reloads the file within a second)."""


_FILE = click.option("--file", "path", required=True, type=_P, help="The key file (JSON lines).")


@keys.command("add")
@_FILE
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--tier", required=True, help="Tier the key may use.")
@click.option("--rpc", "rpcs", multiple=True, help="RPC it may call (repeat; default Route, RouteBatch, Info).")
@click.option("--rate", help="Its own rate limit, e.g. 20/s (default: the server's --rate-limit).")
@click.option("--burst", type=float, help="Its own bucket size.")
@click.option("--note", default="", help="Free text (who it is for).")
def keys_add(path: Path, tenant: str, tier: str, rpcs: tuple[str, ...], rate: str | None, burst: float | None,
             note: str) -> None:
    """Add a key and print it (once: only its hash is stored)."""
    from .keys import DEFAULT_RPCS, add_key

    token, entry = _errors(add_key)(path, tenant=tenant, tier=tier, rpcs=rpcs or DEFAULT_RPCS, note=note,
                                    rate=rate, burst=burst)
    click.echo(token)
    click.echo(f"added key {entry.id} (tenant {tenant}, tier {tier}, rpcs {','.join(entry.rpcs)}); the line above "
               "is the key, shown only now", err=True)


@keys.command("list")
@_FILE
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key (without its hash).")
def keys_list(path: Path, as_json: bool) -> None:
    """List keys (ids, tenants, tiers, RPCs, revocation; never secrets or hashes)."""
    from .keys import load_keys

    for k in _errors(load_keys)(path).values():
        row = {"id": k.id, "tenant": k.tenant, "tier": k.tier, "rpcs": list(k.rpcs), "created": k.created,
               "revoked": k.revoked, "rate": k.rate, "note": k.note}
        if as_json:
            click.echo(json.dumps(row))
        else:
            state = f"revoked {k.revoked}" if k.revoked else "active"
            click.echo(f"{k.id}  {k.tenant:<16} {k.tier:<12} {','.join(k.rpcs):<22} {state:<28} {k.note}")


@keys.command("revoke")
@_FILE
@click.argument("key_id")
def keys_revoke(path: Path, key_id: str) -> None:
    """Revoke KEY_ID (kept in the file, marked revoked)."""
    from .keys import revoke_key

    k = _errors(revoke_key)(path, key_id)
    click.echo(f"revoked {k.id} at {k.revoked}")


@click.group(cls=EnvGroup)
def audit() -> None:
    """Check the audit trail, or turn it into calibration data."""


@audit.command("verify")
@click.argument("logs", nargs=-1, required=True, type=_P)
@click.option("--partial", is_flag=True, help="Accept a chain that starts after seq 0 (older files pruned).")
@click.option("--expect-head", help="The newest record's hash must be this: the log ends where it was anchored "
                                    "('semroute audit head', or the server's audit_head log event).")
@click.option("--anchor", "anchors", multiple=True,
              help="A head taken earlier: it must still be in the chain (the log may have grown since). Repeatable.")
def audit_verify(logs: tuple[Path, ...], partial: bool, expect_head: str | None, anchors: tuple[str, ...]) -> None:
    """Check the hash chain of LOG files; exit 2 naming the first edited, removed or reordered record, or a head
    or anchor that does not match (the newest records were cut off)."""
    from ..audit.verify import verify_logs

    s = _errors(verify_logs)(list(logs), partial=partial, expect_head=expect_head, anchors=anchors)
    gaps = f"; {s.gaps} gap records declare {s.lost} unrecorded decisions" if s.gaps else ""
    checked = " (the expected head)" if expect_head else ""
    checked += f"; {len(anchors)} anchors in the chain" if anchors else ""
    click.echo(f"ok: {s.records} records (seq {s.first_seq}..{s.last_seq}) in {s.files} files, "
               f"head {s.head}{checked}{gaps}")


@audit.command("head")
@click.argument("logs", nargs=-1, required=True, type=_P)
@click.option("--partial", is_flag=True, help="Accept a chain that starts after seq 0 (older files pruned).")
def audit_head(logs: tuple[Path, ...], partial: bool) -> None:
    """Print the newest record's hash (after checking the chain), to anchor somewhere the log's writer cannot
    reach; later, 'audit verify --expect-head HASH' (or --anchor HASH) shows whether records were cut off."""
    from ..audit.verify import verify_logs

    s = _errors(verify_logs)(list(logs), partial=partial)
    click.echo(s.head)
    click.echo(f"seq {s.last_seq}, {s.records} records in {s.files} files", err=True)


@audit.command("to-labelled")
@click.argument("logs", nargs=-1, required=True, type=_P)
@click.option("--labels", required=True, type=_P, help="JSONL: {request_id, route} or {request_id, outcome}.")
@click.option("--out", required=True, type=_P, help="Labelled JSONL to write, for 'semroute calibrate --data'.")
def audit_to_labelled(logs: tuple[Path, ...], labels: Path, out: Path) -> None:
    """Join audit records (--audit-text full) with labels or outcomes into labelled data for calibrate."""
    from ..audit.labels import audit_to_labelled as join

    counts = _errors(join)(list(logs), labels, out)
    click.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


COMMANDS = [keygen, sign, keys, audit]
