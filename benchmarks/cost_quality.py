"""Cost-quality routing on RouteLLM's real outcomes (Mixtral-8x7B vs GPT-4 on MMLU and GSM8K).

    python -m benchmarks.cost_quality [--inner-folds 5] [--jobs 2] [--out benchmarks/results]

Two protocols, both on every prompt of ../shared/data/routellm (converted by benchmarks/routellm_data.py):

1. 5-fold cross-validation by prompt (folds stratified by benchmark). In each fold, ``fit_predictor`` chooses
   its settings by its own inner cross-validation on the four training folds only, is refitted on them, and
   predicts the held-out fold through the stored predictor's serving path (FAISS index, heads, calibration).
2. Leave-subjects-out on MMLU: the MMLU subjects in 5 groups; each group is predicted by a predictor fitted on
   every other prompt (the other subjects and GSM8K): routing on topics it never saw.

Rows for semroute: the setting fit-quality's default chooses (its latency rule included), the most accurate one
(lowest inner-CV Brier score) and the best head-only one (no index search when serving), all three chosen on the
training folds only. Beside them on the same folds: the issue's baseline (plain 20-nearest-neighbour mean of
strong-minus-weak outcomes), the random router and the oracle, and RouteLLM's published numbers (Ong et al. 2024,
Tables 2-3).
Embeddings are cached in benchmarks/results/raw/routellm/ (gitignored), keyed by encoder fingerprint and texts.
One invocation runs both protocols (by default side by side in two processes, one BLAS thread each) and writes
``cost_quality.json`` and ``cost_quality.md`` to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from semroute.quality.fit import Grid, fit_predictor
from semroute.quality.metrics import curve, oracle_scores, summary

from . import routellm_data
from ._common import REPO, machine, write_results

WEAK, STRONG = routellm_data.WEAK, routellm_data.STRONG
MODELS = [STRONG, WEAK]  # sorted, as the outcome loader orders them

# RouteLLM (Ong et al. 2024, arXiv 2406.18665), Tables 2 (MMLU) and 3 (GSM8K): routers trained on Chatbot Arena
# preferences plus the augmentation that helped each benchmark (MMLU: ~1,500 golden-labelled MMLU validation
# questions; GSM8K: GPT-4-judge labels on Nectar), as transcribed from secondary summaries of the paper. The best
# routers' CPT(50%) / CPT(80%) agree with the paper's Table 6 cost-saving ratios (random CPT / router CPT: MMLU
# 1.41x / 1.14x, GSM8K 1.49x / 1.27x); the APGRs and other rows are unverified. See docs/cost-quality.md.
PUBLISHED = {
    "mmlu": [
        ("Random (95% CI)", 0.500, 0.501, 0.799),
        ("SW ranking (Arena + gold)", 0.603, 0.354, 0.716),
        ("Causal LLM (Arena + gold)", 0.600, 0.355, 0.703),
        ("Matrix factorisation (Arena + gold)", 0.597, 0.355, 0.714),
        ("BERT (Arena + gold)", 0.572, 0.413, 0.722),
    ],
    "gsm8k": [
        ("Random (95% CI)", 0.497, 0.500, 0.801),
        ("Causal LLM (Arena + judge)", 0.622, 0.336, 0.633),
        ("SW ranking (Arena + judge)", 0.568, 0.412, 0.722),
        ("Matrix factorisation (Arena + judge)", 0.565, 0.388, 0.726),
        ("BERT (Arena + judge)", 0.531, 0.448, 0.791),
    ],
}
GOALS = {"gsm8k": {"apgr": 0.66, "cpt50": 0.32}, "mmlu": {"apgr": 0.70, "cpt50": 0.25},
         "mmlu_leave_subjects_out": {"apgr": 0.58}}


def load(raw: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    path = raw / "all.jsonl"
    if not path.is_file():
        routellm_data.convert(out=raw)
    # split on "\n" only: prompts hold U+2028 and U+0085, which str.splitlines() would also split on
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    texts = [r["text"] for r in rows]
    from semroute.encoder import OnnxEncoder
    from semroute.export import default_encoder_dir

    enc = OnnxEncoder(default_encoder_dir(), threads=2)
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    cache = raw / f"embeddings-{enc.fingerprint[:12]}-{key}.npy"
    if cache.is_file():
        return rows, np.load(cache)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vecs = np.zeros((len(texts), enc.dim), dtype=np.float32)
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        vecs[idx] = enc.encode([texts[i] for i in idx]).vectors
    np.save(cache, vecs)
    return rows, vecs


def baseline_knn(x: np.ndarray, gain: np.ndarray, train: np.ndarray, test: np.ndarray, k: int = 20) -> np.ndarray:
    sims = x[test] @ x[train].T
    nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return gain[train][nn].mean(1)  # type: ignore[no-any-return]


def measures(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, Any]:
    s = summary(curve(score, weak=weak, strong=strong))
    return {k: s[k] for k in ("apgr", "cpt50", "cpt80", "cpt95", "aiq", "n")}


def splits(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The two protocols' held-out sets: 5 folds by prompt (stratified by benchmark), 5 groups of MMLU subjects."""
    ds = np.array([r["metadata"]["dataset"] for r in rows])
    subj = np.array([r["metadata"]["subject"] for r in rows])
    rng = np.random.default_rng(0)
    per = {d: np.array_split(rng.permutation(np.flatnonzero(ds == d)), 5) for d in ("gsm8k", "mmlu")}
    folds = [np.concatenate([per["gsm8k"][i], per["mmlu"][i]]) for i in range(5)]
    subjects = sorted(set(subj[ds == "mmlu"].tolist()))
    order = np.random.default_rng(1).permutation(len(subjects))
    groups = [[subjects[i] for i in g] for g in np.array_split(order, 5)]
    lso = [np.flatnonzero(np.isin(subj, g)) for g in groups]
    return {"5-fold": folds, "leave-subjects-out": lso, "groups": groups, "subjects": subjects, "ds": ds,
            "subj": subj}


def protocol(name: str, tests: list[np.ndarray], raw: Path, inner_folds: int, grid: Grid,
             fast_within_se: float) -> dict[str, Any]:
    """One protocol, start to end: for each held-out set, fit_predictor's inner CV on the rest, then the chosen
    predictor (and, if the latency rule chose a different one, the most accurate setting too) predicts it.
    Runs in its own process when the benchmark runs the protocols side by side, so it loads the data itself."""
    from semroute.quality.fit import refit
    from semroute.quality.predictor import text_features

    rows, x = load(raw)
    n = len(rows)
    texts = [r["text"] for r in rows]
    y = np.array([[r["outcomes"][m] for m in MODELS] for r in rows])
    ys, yw = y[:, 0], y[:, 1]
    pred = np.full((n, 2), np.nan)
    accurate = np.full((n, 2), np.nan)
    head_only = np.full((n, 2), np.nan)
    base = np.full(n, np.nan)
    chosen = []
    for f, test in enumerate(tests):
        train = np.setdiff1d(np.arange(n), test)
        t0 = time.perf_counter()
        tr_texts = [texts[i] for i in train]
        te_texts = [texts[i] for i in test]
        predictor, rep = fit_predictor(x[train], tr_texts, y[train], MODELS, folds=inner_folds, grid=grid,
                                       fast_within_se=fast_within_se)
        pred[test] = predictor.predict(x[test], te_texts)
        feats = np.c_[x[train].astype(np.float64), text_features(tr_texts)]
        for out, st, platt in ((accurate, rep.most_accurate, rep.most_accurate_platt),
                               (head_only, rep.head_only, rep.head_only_platt)):
            if st is None or st == rep.settings:
                out[test] = pred[test]
                continue
            assert platt is not None
            other = refit(x[train], feats, y[train], MODELS, st, platt, seed=0, index_factory=None, info={})
            out[test] = other.predict(x[test], te_texts)
        base[test] = baseline_knn(x, ys - yw, train, test)
        chosen.append({**vars(rep.settings), "inner_brier": rep.brier, "latency_rule": rep.rule,
                       "fit_s": time.perf_counter() - t0, "n_train": len(train), "n_test": len(test),
                       "fold_apgr": measures(pred[test, 0] - pred[test, 1], yw[test], ys[test])["apgr"]})
        print(f"{name} fold {f + 1}/{len(tests)}: {rep.settings} (most accurate: {rep.most_accurate}) in "
              f"{time.perf_counter() - t0:.0f}s, held-out APGR {chosen[-1]['fold_apgr']:.3f} ({len(test)} prompts)",
              flush=True)
    return {"pred": pred, "accurate": accurate, "head_only": head_only, "base": base, "chosen": chosen}


def run(rows: list[dict[str, Any]], raw: Path, inner_folds: int, grid: Grid, jobs: int,
        fast_within_se: float) -> dict[str, Any]:
    n = len(rows)
    y = np.array([[r["outcomes"][m] for m in MODELS] for r in rows])
    ys, yw = y[:, 0], y[:, 1]
    sp = splits(rows)
    ds, subj = sp["ds"], sp["subj"]
    names = ("5-fold", "leave-subjects-out")
    args = [(name, sp[name], raw, inner_folds, grid, fast_within_se) for name in names]
    if jobs > 1:
        # the two protocols side by side, one process each, each on one BLAS thread (2 cores: no oversubscription)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        saved = {k: os.environ.get(k) for k in _BLAS_VARS}
        os.environ.update({k: "1" for k in _BLAS_VARS})
        try:
            with ProcessPoolExecutor(max_workers=min(jobs, 2), mp_context=mp.get_context("spawn")) as ex:
                done = dict(zip(names, ex.map(protocol, *zip(*args, strict=True)), strict=True))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    else:
        done = {name: protocol(*a) for name, a in zip(names, args, strict=True)}

    out: dict[str, Any] = {}
    five = done["5-fold"]
    for d in ("gsm8k", "mmlu"):
        m = ds == d
        out[d] = {
            "semroute": measures(five["pred"][m, 0] - five["pred"][m, 1], yw[m], ys[m]),
            "semroute_most_accurate": measures(five["accurate"][m, 0] - five["accurate"][m, 1], yw[m], ys[m]),
            "semroute_head_only": measures(five["head_only"][m, 0] - five["head_only"][m, 1], yw[m], ys[m]),
            "baseline_20nn": measures(five["base"][m], yw[m], ys[m]),
            "random": measures(np.zeros(int(m.sum())), yw[m], ys[m]),
            "oracle": measures(oracle_scores(yw[m], ys[m]), yw[m], ys[m]),
            "weak_quality": float(yw[m].mean()), "strong_quality": float(ys[m].mean()),
        }
    out["folds_5"] = five["chosen"]
    # what the oracle gap is made of (MMLU): a router that knew each subject's true mean gain (in-sample, an upper
    # bound on routing by topic alone), against the per-prompt oracle
    m = ds == "mmlu"
    subj_gain = np.zeros(n)
    for s in sp["subjects"]:
        k = subj == s
        subj_gain[k] = (ys - yw)[k].mean()
    out["mmlu_gap"] = {
        "subject_oracle": measures(subj_gain[m], yw[m], ys[m]),
        "gain_between_subjects_var": float(np.var(subj_gain[m])),
        "gain_total_var": float(np.var((ys - yw)[m])),
    }
    lso = done["leave-subjects-out"]
    out["mmlu_leave_subjects_out"] = {
        "semroute": measures(lso["pred"][m, 0] - lso["pred"][m, 1], yw[m], ys[m]),
        "semroute_most_accurate": measures(lso["accurate"][m, 0] - lso["accurate"][m, 1], yw[m], ys[m]),
        "semroute_head_only": measures(lso["head_only"][m, 0] - lso["head_only"][m, 1], yw[m], ys[m]),
        "baseline_20nn": measures(lso["base"][m], yw[m], ys[m]),
        "random": measures(np.zeros(int(m.sum())), yw[m], ys[m]),
        "groups": sp["groups"],
    }
    out["folds_lso"] = lso["chosen"]
    return out


_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _settings_note(folds: list[dict[str, Any]]) -> str:
    kinds = []
    for f in folds:
        what = ("head only" if f["blend"] == 1 else "kNN only" if f["blend"] == 0
                else f"blend {f['blend']} (k {f['k']})")
        kinds.append(f"{what}, {f['clusters']} cluster{'s' if f['clusters'] > 1 else ''}")
    return "; ".join(kinds)


def table(res: dict[str, Any]) -> str:
    def row(name: str, mm: dict[str, Any]) -> str:
        return f"| {name} | {mm['apgr']:.3f} | {100 * mm['cpt50']:.1f}% | {100 * mm['cpt80']:.1f}% |"

    la = res["machine"]["loadavg_at_start"]
    lines = [f"Cost-quality routing on RouteLLM's outcomes: `{res['command']}` ({res['machine']['date']}, "
             f"{res['seconds']:.0f} s, load average at start {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} on 2 cores). "
             f"{res['protocol']}", ""]
    semroute_name = "**semroute** (as fit-quality chooses: latency rule)"
    for d, title in (("gsm8k", "GSM8K (1,319 prompts)"), ("mmlu", "MMLU (11,798 prompts, 47 subjects)")):
        r = res["results"][d]
        g = GOALS[d]
        lines += [f"### {title}, 5-fold CV by prompt", "", "| router | APGR | CPT(50%) | CPT(80%) |",
                  "|---|---|---|---|",
                  row(semroute_name, r["semroute"]),
                  row("semroute, most accurate setting (no latency rule)", r["semroute_most_accurate"]),
                  row("semroute, best head-only setting (no index search)", r["semroute_head_only"]),
                  row("baseline: 20-NN mean gain (same folds)", r["baseline_20nn"]),
                  row("random", r["random"]), row("oracle", r["oracle"]),
                  f"| goal | >= {g['apgr']:.2f} | <= {100 * g['cpt50']:.0f}% | |"]
        lines += [f"| RouteLLM: {name} (published) | {a:.3f} | {100 * c5:.1f}% | {100 * c8:.1f}% |"
                  for name, a, c5, c8 in PUBLISHED[d]]
        lines.append("")
    lines += [f"Settings chosen per 5-fold fold: {_settings_note(res['results']['folds_5'])}.", ""]
    lso = res["results"]["mmlu_leave_subjects_out"]
    lines += ["### MMLU, leave-subjects-out (5 groups of whole subjects)", "",
              "| router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|",
              row(semroute_name, lso["semroute"]),
              row("semroute, most accurate setting", lso["semroute_most_accurate"]),
              row("semroute, best head-only setting", lso["semroute_head_only"]),
              row("baseline: 20-NN mean gain", lso["baseline_20nn"]),
              row("random", lso["random"]), "| goal | >= 0.58 | | |", "",
              f"Settings chosen per group: {_settings_note(res['results']['folds_lso'])}. Per held-out group "
              "APGR: " + ", ".join(f"{f['fold_apgr']:.3f}" for f in res["results"]["folds_lso"]) + ".", ""]
    gap = res["results"]["mmlu_gap"]
    lines += ["### What the MMLU oracle gap is made of", "", "| router | APGR | CPT(50%) | CPT(80%) |",
              "|---|---|---|---|",
              row("router knowing each subject's true mean gain (in-sample)", gap["subject_oracle"]),
              "", f"Between-subject share of the per-prompt gain variance: "
              f"{gap['gain_between_subjects_var'] / gap['gain_total_var']:.1%}.", ""]
    return "\n".join(lines)


# The grid the benchmark searches (inner CV, per training set): fit-quality's default, whole (both protocols take
# a few minutes on this machine).
GRID = Grid()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cost_quality", description=__doc__)
    ap.add_argument("--inner-folds", type=int, default=5, help="fit_predictor's folds inside each training set "
                    "(fit-quality's default)")
    ap.add_argument("--jobs", type=int, default=2, help="run the two protocols side by side in 2 processes (1: "
                    "one after the other)")
    ap.add_argument("--fast-within-se", type=float, default=1.0, help="fit-quality's latency rule (its default)")
    ap.add_argument("--raw", type=Path, default=routellm_data.OUT)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    t0 = time.perf_counter()
    mach = machine()
    rows, _ = load(ns.raw)  # converts and embeds once, caching, before the protocols' processes read the cache
    results = run(rows, ns.raw, ns.inner_folds, GRID, ns.jobs, ns.fast_within_se)
    res: dict[str, Any] = {
        "machine": mach, "loadavg_at_end": os.getloadavg(),
        "command": "python -m benchmarks.cost_quality" + (" " + " ".join(argv or []) if argv else ""),
        "protocol": (f"Settings chosen by {ns.inner_folds}-fold CV inside each training set only (never on the "
                     f"held-out split), from fit-quality's default grid (k {'/'.join(map(str, GRID.k))}, tau "
                     f"{'/'.join(map(str, GRID.tau))}, clusters {'/'.join(map(str, GRID.clusters))}, L2 "
                     f"{'/'.join(map(str, GRID.l2))}, blend {'/'.join(map(str, GRID.blend))}), with fit-quality's "
                     f"latency rule (head only if within {ns.fast_within_se:g} SE of the best Brier score); both "
                     f"protocols in this one run ({min(ns.jobs, 2)} process{'es' if ns.jobs > 1 else ''})."),
        "grid": vars(GRID), "results": results, "published": PUBLISHED, "goals": GOALS,
    }
    res["seconds"] = time.perf_counter() - t0
    write_results(ns.out, "cost_quality", res, lambda: table(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
