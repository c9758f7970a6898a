"""Evaluation reports: Markdown with PNG plots (matplotlib, Agg backend; install semroute[eval])."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SemrouteError


def require_matplotlib() -> None:
    """Raise the install hint when the plotting extra is missing (the serving install, e.g. ``make serve``'s venv,
    does not have it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise SemrouteError(
            "--report needs matplotlib, which the serving install (make serve) leaves out: "
            "pip install 'semroute[eval]' (.venv/bin/pip in a make serve checkout), or run without --report"
        ) from e


def _plt() -> Any:
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(
    out: Path, m: dict[str, Any], sweep_rows: Sequence[dict[str, Any]], *, title: str,
    thresholds_note: str = "", current_threshold: float | None = None,
    bundle_thresholds: Sequence[float] | None = None,
) -> Path:
    """Write report.md, metrics.json and three plots to ``out``. ``bundle_thresholds`` are the evaluated bundle's
    own (one per route): the sweeps use one global threshold, so a bundle with per-route thresholds is drawn as
    its own marker beside the curves, and said to be off them, rather than as a point that seems misplaced."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    t = [r["threshold"] for r in sweep_rows]
    ths = sorted(set(round(float(x), 4) for x in bundle_thresholds)) if bundle_thresholds else []
    if len(ths) == 1 and current_threshold is None:
        current_threshold = ths[0]
    per_route = len(ths) > 1
    own = (f"this bundle: per-route thresholds {ths[0]:.2f}-{ths[-1]:.2f}, off the global-threshold curve"
           if per_route else "this bundle")

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(t, [r["accuracy"] for r in sweep_rows], label="accuracy (fallback as a class)", lw=2.2)
    ax.plot(t, [r["in_scope_accuracy"] for r in sweep_rows], label="in-scope accuracy", lw=1.6)
    ax.plot(t, [r["fallback_rate"] for r in sweep_rows], label="fallback rate", lw=1.6, ls="--")
    ax.plot(t, [r["fallback_recall"] for r in sweep_rows], label="out-of-scope recall", lw=1.2, ls=":")
    best = max(sweep_rows, key=lambda r: r["accuracy"])
    ax.axvline(best["threshold"], color="grey", lw=0.8)
    ax.annotate(f"best in hindsight on this data: {best['threshold']:.2f}\naccuracy {best['accuracy']:.1%}",
                (best["threshold"], best["accuracy"]), xytext=(10, -40), textcoords="offset points", fontsize=8)
    if current_threshold is not None:
        ax.axvline(current_threshold, color="tab:red", lw=0.8, ls="--",
                   label=f"bundle threshold {current_threshold:.2f}")
    if per_route:
        ax.axhline(m["accuracy"], color="tab:red", lw=0.8, ls="-.",
                   label=f"{own}: accuracy {m['accuracy']:.1%}")
    ax.set(xlabel="global threshold on the decision score", ylabel="share of queries", ylim=(0, 1.02),
           title="Accuracy and fallback against the threshold")
    ax.grid(alpha=0.3)
    # beside the axes, not on them: inside, wherever it goes it covers a curve at some threshold
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.savefig(out / "threshold_sweep.png", bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    pts = [(r["cost_ratio"], r["accuracy"], r["threshold"]) for r in sweep_rows if r["cost_ratio"] is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1.5)
        # label a few thresholds, skipping points too close to the last label (they crowd at the accuracy peak)
        span_x = (max(p[0] for p in pts) - min(p[0] for p in pts)) or 1.0
        span_y = (max(p[1] for p in pts) - min(p[1] for p in pts)) or 1.0
        last: tuple[float, float] | None = None
        for c, a, th in pts:
            if last is None or abs(c - last[0]) / span_x + abs(a - last[1]) / span_y > 0.12:
                ax.annotate(f"t={th:.2f}", (c, a), fontsize=7, xytext=(4, -10), textcoords="offset points")
                last = (c, a)
        if "cost" in m:
            ax.scatter([m["cost"]["ratio"]], [m["accuracy"]], color="tab:red", zorder=3, label=own)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: never on a point
    ax.set(xlabel="cost relative to sending everything to the fallback model", ylabel="accuracy",
           title="Cost against quality (sweeping the threshold)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "cost_quality.png", bbox_inches="tight")
    plt.close(fig)

    # confusion heat map over the routes involved in the most frequent confusions
    conf = m["top_confusions"][:15]
    labels = sorted({c["truth"] for c in conf} | {c["predicted"] for c in conf})
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(labels) + 2), max(4, 0.4 * len(labels) + 1.5)), dpi=110)
    if labels:
        import numpy as np

        idx = {lab: i for i, lab in enumerate(labels)}
        grid = np.zeros((len(labels), len(labels)))
        for c in conf:
            grid[idx[c["truth"]], idx[c["predicted"]]] = c["count"]
        im = ax.imshow(grid, cmap="Reds")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for (i, j), v in np.ndenumerate(grid):
            if v:  # white on the darker half of the colour scale, where black would vanish
                ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                        color="white" if v > grid.max() / 2 else "black")
        fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set(xlabel="decided", ylabel="expected", title="Most frequent confusions (errors only)")
    fig.tight_layout()
    fig.savefig(out / "confusions.png")
    plt.close(fig)

    lines = [
        f"# {title}", "",
        f"{m['n']} queries ({m['fallback_n']} out of scope). Bundle `{m.get('index_version', '?')}`. "
        f"{thresholds_note}", "",
        *([f"The bundle's thresholds are per route ({ths[0]:.2f}-{ths[-1]:.2f}); the threshold sweep and the "
           "cost-quality curve move one global threshold over every route, so the bundle's own result is marked "
           "beside those curves, not on them.", ""] if per_route else []),
        "| metric | value |", "|---|---|",
        f"| accuracy (fallback as a class) | {m['accuracy']:.1%} |",
        f"| in-scope accuracy | {m['in_scope_accuracy']:.1%} |",
        f"| fallback precision | {m['fallback_precision']:.1%} |",
        f"| fallback recall | {m['fallback_recall']:.1%} |",
        f"| fallback rate | {m['fallback_rate']:.1%} |",
    ]
    if "cost" in m:
        lines.append(f"| cost vs all-fallback | {m['cost']['ratio']:.1%} ({m['cost']['assumption']}) |")
    if "latency" in m:
        lines.append(f"| decision latency (batch 1) | median {m['latency']['median_ms']:.2f} ms, "
                     f"p99 {m['latency']['p99_ms']:.2f} ms |")
    lines += ["", "![threshold sweep](threshold_sweep.png)", "", "![cost and quality](cost_quality.png)", "",
              "![confusions](confusions.png)", "", "## Top confusions", "", "| expected | decided | count |",
              "|---|---|---|"]
    lines += [f"| {c['truth']} | {c['predicted']} | {c['count']} |" for c in m["top_confusions"][:15]]
    worst = sorted(m["per_route"].items(), key=lambda kv: kv[1]["f1"])[:10]
    lines += ["", "## Weakest routes (F1)", "", "| route | precision | recall | F1 | support |",
              "|---|---|---|---|---|"]
    lines += [f"| {r} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} | {v['support']} |" for r, v in worst]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
    return out / "report.md"
