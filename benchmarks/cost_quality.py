"""Cost-quality routing on RouteLLM's real outcomes (Mixtral-8x7B vs GPT-4 on MMLU and GSM8K).

    python -m benchmarks.cost_quality [--inner-folds 3] [--out benchmarks/results]

Two protocols, both on every prompt of ../shared/data/routellm (converted by benchmarks/routellm_data.py):

1. 5-fold cross-validation by prompt (folds stratified by benchmark). In each fold, ``fit_predictor`` chooses
   its settings by its own inner cross-validation on the four training folds only, is refitted on them, and
   predicts the held-out fold through the stored predictor's serving path (FAISS index, heads, calibration).
2. Leave-subjects-out on MMLU: the MMLU subjects in 5 groups; each group is predicted by a predictor fitted on
   every other prompt (the other subjects and GSM8K): routing on topics it never saw.

Beside it on the same folds: the issue's baseline (plain 20-nearest-neighbour mean of strong-minus-weak
outcomes), the random router and the oracle, and RouteLLM's published numbers (Ong et al. 2024, Tables 2-3).
Embeddings are cached in benchmarks/results/raw/routellm/ (gitignored), keyed by encoder fingerprint and texts.
Writes ``cost_quality.json`` and ``cost_quality.md`` to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from semroute._fs import atomic_write_bytes
from semroute.quality.fit import Grid, fit_predictor
from semroute.quality.metrics import curve, oracle_scores, summary

from . import routellm_data
from ._common import REPO, machine

WEAK, STRONG = routellm_data.WEAK, routellm_data.STRONG
MODELS = [STRONG, WEAK]  # sorted, as the outcome loader orders them

# RouteLLM (Ong et al. 2024, arXiv 2406.18665), Tables 2 (MMLU) and 3 (GSM8K): routers trained on Chatbot Arena
# preferences plus the augmentation that helped each benchmark (MMLU: ~1,500 golden-labelled MMLU validation
# questions; GSM8K: GPT-4-judge labels on Nectar). Numbers as transcribed from the paper; see docs/cost-quality.md.
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


def run(rows: list[dict[str, Any]], x: np.ndarray, inner_folds: int, grid: Grid, log: Any,
        protocols: tuple[str, ...] = ("5fold", "lso")) -> dict[str, Any]:
    n = len(rows)
    texts = [r["text"] for r in rows]
    y = np.array([[r["outcomes"][m] for m in MODELS] for r in rows])
    ys, yw = y[:, 0], y[:, 1]
    ds = np.array([r["metadata"]["dataset"] for r in rows])
    subj = np.array([r["metadata"]["subject"] for r in rows])
    rng = np.random.default_rng(0)
    per = {d: np.array_split(rng.permutation(np.flatnonzero(ds == d)), 5) for d in ("gsm8k", "mmlu")}
    folds = [np.concatenate([per["gsm8k"][i], per["mmlu"][i]]) for i in range(5)]
    subjects = sorted(set(subj[ds == "mmlu"].tolist()))
    order = np.random.default_rng(1).permutation(len(subjects))
    groups = [[subjects[i] for i in g] for g in np.array_split(order, 5)]
    lso = [np.flatnonzero(np.isin(subj, g)) for g in groups]

    def protocol(name: str, tests: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        pred = np.full((n, 2), np.nan)
        base = np.full(n, np.nan)
        chosen = []
        for f, test in enumerate(tests):
            train = np.setdiff1d(np.arange(n), test)
            t0 = time.perf_counter()
            predictor, rep = fit_predictor(x[train], [texts[i] for i in train], y[train], MODELS,
                                           folds=inner_folds, grid=grid)
            pred[test] = predictor.predict(x[test], [texts[i] for i in test])
            base[test] = baseline_knn(x, ys - yw, train, test)
            held = test[ds[test] == "mmlu"] if name != "5-fold" else test
            chosen.append({**vars(rep.settings), "inner_brier": rep.brier, "fit_s": time.perf_counter() - t0,
                           "n_train": len(train), "n_test": len(test),
                           "fold_apgr": measures(pred[held, 0] - pred[held, 1], yw[held], ys[held])["apgr"]})
            log(f"{name} fold {f + 1}/{len(tests)}: {rep.settings} in {time.perf_counter() - t0:.0f}s, "
                f"held-out APGR {chosen[-1]['fold_apgr']:.3f} ({len(held)} prompts)")
        return pred, base, chosen

    out: dict[str, Any] = {}
    pred, base, chosen = protocol("5-fold", folds) if "5fold" in protocols else (np.zeros((n, 2)), np.zeros(n), [])
    for d in ("gsm8k", "mmlu") if "5fold" in protocols else ():
        m = ds == d
        score = pred[m, 0] - pred[m, 1]
        out[d] = {
            "semroute": measures(score, yw[m], ys[m]),
            "baseline_20nn": measures(base[m], yw[m], ys[m]),
            "random": measures(np.zeros(int(m.sum())), yw[m], ys[m]),
            "oracle": measures(oracle_scores(yw[m], ys[m]), yw[m], ys[m]),
            "weak_quality": float(yw[m].mean()), "strong_quality": float(ys[m].mean()),
        }
    out["folds_5"] = chosen
    if "5fold" in protocols:
        log(json.dumps({d: out[d] for d in ("gsm8k", "mmlu")}))
    # what the oracle gap is made of (MMLU): a router that knew each subject's true mean gain (in-sample, an upper
    # bound on routing by topic alone), against the per-prompt oracle
    m = ds == "mmlu"
    subj_gain = np.zeros(n)
    for s in subjects:
        k = subj == s
        subj_gain[k] = (ys - yw)[k].mean()
    out["mmlu_gap"] = {
        "subject_oracle": measures(subj_gain[m], yw[m], ys[m]),
        "gain_between_subjects_var": float(np.var(subj_gain[m])),
        "gain_total_var": float(np.var((ys - yw)[m])),
    }
    if "lso" not in protocols:
        return out
    pred_l, base_l, chosen_l = protocol("leave-subjects-out", lso)
    out["mmlu_leave_subjects_out"] = {
        "semroute": measures(pred_l[m, 0] - pred_l[m, 1], yw[m], ys[m]),
        "baseline_20nn": measures(base_l[m], yw[m], ys[m]),
        "random": measures(np.zeros(int(m.sum())), yw[m], ys[m]),
        "groups": groups,
    }
    out["folds_lso"] = chosen_l
    return out


def table(res: dict[str, Any]) -> str:
    def row(name: str, mm: dict[str, Any]) -> str:
        return f"| {name} | {mm['apgr']:.3f} | {100 * mm['cpt50']:.1f}% | {100 * mm['cpt80']:.1f}% |"

    lines = [f"Cost-quality routing, RouteLLM outcomes ({res['machine']['date']}); {res['protocol']}", ""]
    for d, title in (("gsm8k", "GSM8K (1,319 prompts)"), ("mmlu", "MMLU (11,798 prompts, 47 subjects)")):
        r = res["results"][d]
        g = GOALS[d]
        lines += [f"### {title}, 5-fold CV by prompt", "", "| router | APGR | CPT(50%) | CPT(80%) |",
                  "|---|---|---|---|",
                  row("**semroute** (kNN + heads, calibrated)", r["semroute"]),
                  row("baseline: 20-NN mean gain (same folds)", r["baseline_20nn"]),
                  row("random", r["random"]), row("oracle", r["oracle"]),
                  f"| goal | >= {g['apgr']:.2f} | <= {100 * g['cpt50']:.0f}% | |"]
        lines += [f"| RouteLLM: {name} (published) | {a:.3f} | {100 * c5:.1f}% | {100 * c8:.1f}% |"
                  for name, a, c5, c8 in PUBLISHED[d]]
        lines.append("")
    lso = res["results"]["mmlu_leave_subjects_out"]
    lines += ["### MMLU, leave-subjects-out (5 groups of whole subjects)", "",
              "| router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|",
              row("**semroute**", lso["semroute"]), row("baseline: 20-NN mean gain", lso["baseline_20nn"]),
              row("random", lso["random"]), "| goal | >= 0.58 | | |", ""]
    gap = res["results"]["mmlu_gap"]
    lines += ["### What the MMLU oracle gap is made of", "", "| router | APGR | CPT(50%) | CPT(80%) |",
              "|---|---|---|---|",
              row("router knowing each subject's true mean gain (in-sample)", gap["subject_oracle"]),
              "", f"Between-subject share of the per-prompt gain variance: "
              f"{gap['gain_between_subjects_var'] / gap['gain_total_var']:.1%}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cost_quality", description=__doc__)
    ap.add_argument("--inner-folds", type=int, default=3, help="fit_predictor's folds inside each training set")
    ap.add_argument("--raw", type=Path, default=routellm_data.OUT)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--protocols", default="5fold,lso", help="5fold, lso or both; results already in "
                    "--out/cost_quality.json for the other protocol are kept (run the two side by side)")
    ns = ap.parse_args(argv)
    protocols = tuple(p.strip() for p in ns.protocols.split(","))
    t0 = time.perf_counter()
    rows, x = load(ns.raw)
    grid = Grid(clusters=(1, 2, 4), l2=(1e-3,))
    res: dict[str, Any] = {
        "machine": machine(),
        "protocol": (f"settings chosen by {ns.inner_folds}-fold CV inside each training set from "
                     f"{json.dumps(vars(grid))}"),
        "results": run(rows, x, ns.inner_folds, grid, lambda s: print(s, flush=True), protocols),
        "published": PUBLISHED, "goals": GOALS,
    }
    res["seconds"] = {ns.protocols: time.perf_counter() - t0}
    ns.out.mkdir(parents=True, exist_ok=True)
    old = ns.out / "cost_quality.json"
    if old.is_file() and set(protocols) != {"5fold", "lso"}:  # keep the other protocol's results
        prev = json.loads(old.read_text())
        res["results"] = {**prev.get("results", {}), **res["results"]}
        res["seconds"] = {**prev.get("seconds", {}), **res["seconds"]}
    atomic_write_bytes(old, (json.dumps(res, indent=1) + "\n").encode())
    if not {"gsm8k", "mmlu_leave_subjects_out"} <= set(res["results"]):
        print(f"wrote {old} (run the other protocol for the table)")
        return 0
    md = table(res)
    atomic_write_bytes(ns.out / "cost_quality.md", (md + "\n").encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
