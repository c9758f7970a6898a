"""What ``semroute fit-quality`` and ``semroute eval-cost`` do (cli.py only parses and prints)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def fit_quality_command(index_dir: Path, outcomes: Path, out: Path, *, folds: int, seed: int, threads: int,
                        fast_within_se: float = 1.0) -> str:
    from tqdm import tqdm

    from ..bundle import load_bundle, resign_note
    from ..encoder import OnnxEncoder
    from .fit import fit_predictor
    from .outcomes import load_outcomes
    from .store import write_quality_bundle

    t0 = time.perf_counter()
    bundle = load_bundle(index_dir)
    known = {*bundle.models, bundle.table.fallback_model}
    data = load_outcomes(outcomes, known_models=known)  # before any expensive work
    enc = OnnxEncoder(bundle.encoder_dir, threads=threads)
    order = sorted(range(len(data)), key=lambda i: len(data.texts[i]))  # length-sorted: less padding
    vectors = np.zeros((len(data), enc.dim), dtype=np.float32)
    with tqdm(total=len(data), unit="prompt", desc="embedding", disable=not sys.stderr.isatty(),
              leave=False) as bar:
        for s in range(0, len(order), 64):
            idx = order[s : s + 64]
            vectors[idx] = enc.encode([data.texts[i] for i in idx]).vectors
            bar.update(len(idx))
    predictor, report = fit_predictor(vectors, data.texts, data.scores, data.models, folds=folds, seed=seed,
                                      fast_within_se=fast_within_se)
    record = {
        "outcomes": {"path": str(outcomes), "sha256": data.sha256, "prompts": len(data),
                     "duplicates_dropped": data.duplicates, "notes": data.notes},
        "models": data.models, "settings": dataclasses.asdict(report.settings),
        **predictor.info["cv"],
    }
    new = write_quality_bundle(index_dir, out, predictor, record)
    st = report.settings
    what = ("kNN only" if st.blend == 0 else "head only" if st.blend == 1
            else f"{st.blend:.2f} head + {1 - st.blend:.2f} kNN")
    if report.rule.get("head_only_chosen"):
        what += (f", within {report.rule['head_only_brier_gap']:.5f} Brier (SE {report.rule['gap_se']:.5f}) of the "
                 "most accurate setting, so no index search when serving")
    return (f"wrote {out} (version {new.version}, parent {bundle.version}): {len(data)} prompts, "
            f"{len(data.models)} models; {what} (k={st.k}, tau={st.tau}, clusters={st.clusters}, l2={st.l2}); "
            f"{folds}-fold Brier {report.brier:.4f} in {time.perf_counter() - t0:.0f}s{resign_note(index_dir, out)}")


def eval_cost_command(index_dir: Path, outcomes: Path, *, weak: str | None, strong: str | None,
                      report: Path | None) -> tuple[dict[str, Any], str]:
    from ..router import Router
    from .evaluate import evaluate_cost
    from .outcomes import load_outcomes

    router = Router.load(index_dir)
    known = getattr(router.quality_predictor, "models", None)
    data = load_outcomes(outcomes, known_models=known)
    m, curves = evaluate_cost(router, data, weak=weak, strong=strong)
    if report is not None:
        from .report import write_cost_report

        write_cost_report(report, m, curves, title=f"semroute eval-cost: {outcomes.name}")
    text = (f"n={m['n']}  weak={m['weak']} ({m['weak_quality']:.3f})  strong={m['strong']} "
            f"({m['strong_quality']:.3f})\n"
            f"APGR {m['apgr']:.3f} (random {m['random_apgr']:.3f}, oracle {m['oracle_apgr']:.3f})  "
            f"CPT(50%) {m['cpt50']:.1%}  CPT(80%) {m['cpt80']:.1%}  CPT(95%) {m['cpt95']:.1%}  AIQ {m['aiq']:.4f}\n"
            f"at 95% of the strong model's quality: {m['share_at_95pct_strong_quality']:.1%} strong calls, "
            f"cost saved {m['cost_saved_at_95pct_strong_quality']:.1%}")
    return m, text
