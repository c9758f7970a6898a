"""Measure the figures README.md and docs/ quote about the bundled routes, and write them where they are quoted.

    python scripts/readme_figures.py            # measure and print them (JSON)
    python scripts/readme_figures.py --write    # ... and rewrite them in README.md and docs/*.md
    python scripts/readme_figures.py --check    # exit 1 if a stable figure in the docs differs from a fresh run
    python scripts/readme_figures.py --clinc    # also int8/fp32 agreement on CLINC150 val (a minute or two more)

A figure sits between ``<!-- fig:NAME -->`` and ``<!-- /fig -->`` in the Markdown. It builds a bundle from
``routes/`` with the default encoder in a temporary directory (as ``make serve`` does), evaluates it on
``examples/bundled_eval.jsonl``, runs the README's Python snippet against a real server, and times a start-up.
``--check`` compares only the figures a machine cannot change (counts, accuracies, the snippet's output, the example
decision's route, model, threshold and reason); timings and float digits are rewritten by ``--write`` with the date.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EVAL = REPO / "examples" / "bundled_eval.jsonl"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- fig:(?P<name>[a-z0-9-]+) -->(?P<body>.*?)<!-- /fig -->", re.S)
ROUTE_REQUEST = {"text": "my card was charged twice", "metadata": {"tenant": "acme"},
                 "options": {"top_scores": 2, "top_neighbours": 1}}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def build(routes: Path, out: Path, reuse: Path | None = None) -> Path:
    from semroute.bundle import build_bundle
    from semroute.encoder import META_FILE, OnnxEncoder
    from semroute.export import default_encoder_dir, export_encoder
    from semroute.routes import load_routes

    enc_dir = default_encoder_dir()
    if not (enc_dir / META_FILE).is_file():
        export_encoder(enc_dir)
    build_bundle(load_routes([routes]), OnnxEncoder(enc_dir, threads=2), enc_dir, out, reuse=reuse)
    return out


def evaluate(bundle: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from semroute.evaluation import cost_inputs, evaluate, sweep
    from semroute.labelled import load_labelled
    from semroute.router import Router

    router = Router.load(bundle)
    m, scored = evaluate(router, load_labelled(EVAL, known_routes=router.bundle.table.names).examples)
    return m, sweep(scored, **cost_inputs(router))


def knn_routes(tmp: Path) -> Path:
    """routes/ with ``scorer: knn`` at a default threshold of 0.3, as routes/models.yaml suggests."""
    import shutil

    import yaml

    out = tmp / "routes-knn"
    shutil.copytree(REPO / "routes", out)
    doc = yaml.safe_load((out / "models.yaml").read_text())
    doc["defaults"].update(scorer="knn", threshold=0.3)
    (out / "models.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@contextlib.contextmanager
def server(bundle: Path) -> Iterator[str]:
    from server_harness import InProcessServer

    from semroute.server import ServeConfig

    with InProcessServer(ServeConfig(index=bundle, port=0, watch=False)) as s:
        yield s.target


def python_snippet(target: str) -> str:
    """Run the README's Python snippet as written (its address pointed at ``target``); return what it prints."""
    text = (REPO / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "RouterClient(" in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("127.0.0.1:50051", target), "README.md", "exec"), {})
    return out.getvalue().strip()


def route_example(target: str) -> dict[str, Any]:
    """The README's Route request through the generated stub, as grpcurl prints it (proto field names)."""
    import grpc
    from google.protobuf import json_format

    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
        req = json_format.ParseDict(ROUTE_REQUEST, pb.RouteRequest())
        stub.Route(req, timeout=30)  # warm: the example shows a second call's timings
        reply = stub.Route(req, timeout=30)
    return json.loads(json_format.MessageToJson(reply, preserving_proto_field_name=True))


def start_to_serving(bundle: Path) -> float:
    """Seconds from starting ``semroute serve`` to its serving line (bundle loaded and warmed, port bound)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "semroute.cli", "serve", "--index", str(bundle), "--port", "0",
                             "--no-watch"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "serving bundle" in line:
                return time.perf_counter() - t0
        raise RuntimeError("semroute serve exited before serving")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def clinc_agreement() -> str:
    import numpy as np
    from test_clinc_agreement import _decisions

    from benchmarks._common import clinc
    from semroute.encoder import FP32_MODEL_FILE, OnnxEncoder
    from semroute.export import default_encoder_dir

    data, enc_dir = clinc(), default_encoder_dir()
    queries = [t for t, _ in data["val"]] + [t for t, _ in data["oos_val"]]
    int8 = _decisions(OnnxEncoder(enc_dir, threads=2), data["train"], queries, 0.55)
    fp32 = _decisions(OnnxEncoder(enc_dir, threads=2, model_file=FP32_MODEL_FILE), data["train"], queries, 0.55)
    return pct(float(np.mean([a == b for a, b in zip(int8, fp32, strict=True)])))


def block(lang: str, text: str) -> str:
    return f"\n```{lang}\n{text}\n```\n"


def measure(with_clinc: bool) -> tuple[dict[str, str], set[str]]:
    """(figure name -> Markdown, names of the figures --check compares)."""
    from semroute.export import calibration_sentences

    figs: dict[str, str] = {}
    stable: set[str] = set()
    day = time.strftime("%Y-%m-%d", time.gmtime())
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="readme-figures-") as tmp:
        bundle = build(REPO / "routes", Path(tmp) / "bundle")
        m, rows = evaluate(bundle)
        right = round(m["accuracy"] * m["n"])
        figs["bundled-eval"] = f"{pct(m['accuracy'])} ({right} of {m['n']} queries, {m['fallback_n']} out of scope)"
        best = max(r["accuracy"] for r in rows)
        at_best = [r["threshold"] for r in rows if r["accuracy"] == best]
        figs["bundled-eval-best"] = (f"{pct(best)} at the best single global threshold, {at_best[0]:.2f} "
                                     f"({len(at_best)} of the thresholds 0.00, 0.01, ... 1.00 reach it, "
                                     f"up to {at_best[-1]:.2f})")
        knn = build(knn_routes(Path(tmp)), Path(tmp) / "bundle-knn", reuse=bundle)
        figs["bundled-eval-knn"] = pct(evaluate(knn)[0]["accuracy"])
        figs["calibration-sentences"] = str(len(calibration_sentences()))
        stable |= {"bundled-eval", "bundled-eval-best", "bundled-eval-knn", "calibration-sentences"}

        with server(bundle) as target:
            figs["python-snippet-output"] = block("", python_snippet(target))
            reply = route_example(target)
        d = reply["decision"]
        head = {k: d[k] for k in ("route", "model", "score", "threshold", "reason")}
        short = json.dumps({"decision": head}, indent=2)[:-4].rstrip() + ",\n    ...\n"
        figs["route-example-short"] = block("json", short.rstrip())
        figs["route-example-full"] = block("json", json.dumps(reply, indent=2))
        figs["route-example-decision"] = (f"route `{d.get('route')}`, model `{d['model']}`, threshold "
                                          f"{d['threshold']}, `{d['reason']}`")
        stable |= {"python-snippet-output", "route-example-decision"}
        figs["route-example-when"] = f"{day}, load average {load:.1f}"
        secs = sorted(start_to_serving(bundle) for _ in range(3))
        figs["serve-start"] = (f"{secs[1]:.1f} s (median of 3 on {day}, load average {load:.1f}, "
                               f"`python scripts/readme_figures.py`)")
    if with_clinc:
        figs["clinc-agreement"] = clinc_agreement()
    return figs, stable


def rewrite(text: str, figs: dict[str, str]) -> str:
    def sub(mt: re.Match[str]) -> str:
        name = mt["name"]
        return f"<!-- fig:{name} -->{figs[name]}<!-- /fig -->" if name in figs else mt.group(0)

    return MARK.sub(sub, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the figures in README.md and docs/*.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if a stable figure differs from the docs")
    ap.add_argument("--clinc", action="store_true", help="also measure int8/fp32 agreement on CLINC150 val")
    args = ap.parse_args()
    figs, stable = measure(args.clinc)
    print(json.dumps(figs, indent=1))
    status = 0
    seen: set[str] = set()
    for path in DOCS:
        text = path.read_text()
        for mt in MARK.finditer(text):
            seen.add(mt["name"])
            if args.check and mt["name"] in stable and mt["body"] != figs[mt["name"]]:
                print(f"{path.relative_to(REPO)}: fig:{mt['name']} says {mt['body'].strip()!r}, measured "
                      f"{figs[mt['name']].strip()!r} (python scripts/readme_figures.py --write)", file=sys.stderr)
                status = 1
        if args.write and (new := rewrite(text, figs)) != text:
            path.write_text(new)
            print(f"updated {path.relative_to(REPO)}", file=sys.stderr)
    if args.check and (missing := stable - seen):
        print(f"figures measured but quoted nowhere: {sorted(missing)}", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
