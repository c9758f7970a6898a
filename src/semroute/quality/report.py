"""The eval-cost report: report.md, metrics.json, cost_quality.png and reliability.png (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..report import _plt
from .metrics import Curve


def write_cost_report(out: Path, m: dict[str, Any], curves: dict[str, Any], *, title: str) -> Path:
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    c: Curve = curves["router"]
    orc: Curve = curves["oracle"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    pct = 100 * c.share
    ax.plot(100 * orc.share, 100 * orc.quality, color="tab:green", lw=1.2, ls="--", label="oracle (knows outcomes)")
    ax.plot(pct, 100 * c.quality, color="tab:blue", lw=2.2, label=f"semroute (APGR {m['apgr']:.3f})")
    ax.plot([0, 100], [100 * c.weak_quality, 100 * c.strong_quality], color="grey", lw=1.2,
            label=f"random (APGR {m['random_apgr']:.3f})")
    ax.axhline(100 * c.strong_quality, color="tab:red", lw=0.8, ls=":",
               label=f"all {m['strong']}: {100 * c.strong_quality:.1f}%")
    ax.axhline(100 * c.weak_quality, color="black", lw=0.8, ls=":",
               label=f"all {m['weak']}: {100 * c.weak_quality:.1f}%")
    for key, frac in (("cpt50", 0.5), ("cpt80", 0.8)):
        q = c.weak_quality + frac * c.gap
        ax.plot([100 * m[key]], [100 * q], "o", color="tab:blue")
        ax.annotate(f"CPT({int(frac * 100)}%) = {100 * m[key]:.1f}%", (100 * m[key], 100 * q),
                    xytext=(8, -14), textcoords="offset points", fontsize=8)
    lo = 100 * min(c.weak_quality, float(c.quality.min()))
    hi = 100 * max(float(orc.quality.max()), c.strong_quality)
    ax.set(xlim=(0, 100), ylim=(lo - 2, hi + 2), xlabel=f"share of queries sent to {m['strong']} (%)",
           ylabel="quality (% answered well)", title=f"Quality against cost ({m['n']} prompts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "cost_quality.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=110, sharey=True)
    for ax, name in zip(axes, (m["weak"], m["strong"]), strict=True):
        r = m["reliability"][name]
        xs = [b["predicted"] for b in r["bins"]]
        ys = [b["observed"] for b in r["bins"]]
        ns = np.array([b["n"] for b in r["bins"]], dtype=float)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
        ax.plot(xs, ys, color="tab:blue", lw=1.2)
        ax.scatter(xs, ys, s=20 + 200 * ns / ns.max(), color="tab:blue", zorder=3, label="bins (area ~ prompts)")
        for x, y, n in zip(xs, ys, ns.tolist(), strict=True):
            ax.annotate(str(int(n)), (x, y), xytext=(5, -10), textcoords="offset points", fontsize=7)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="predicted quality", title=f"{name}\nECE {r['ece']:.3f}, "
               f"Brier {r['brier']:.3f}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("observed quality (share answered well)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Reliability: predicted against observed quality", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "reliability.png")
    plt.close(fig)

    lines = [
        f"# {title}", "",
        f"{m['n']} prompts with outcomes for both models; weak `{m['weak']}` ({100 * m['weak_quality']:.1f}%), "
        f"strong `{m['strong']}` ({100 * m['strong_quality']:.1f}%). Bundle `{m['index_version']}`.", "",
        "| measure | semroute | random | oracle |", "|---|---|---|---|",
        f"| APGR | {m['apgr']:.3f} | {m['random_apgr']:.3f} | {m['oracle_apgr']:.3f} |",
        f"| CPT(50%) | {100 * m['cpt50']:.1f}% | {100 * m['random_cpt50']:.1f}% | {100 * m['oracle_cpt50']:.1f}% |",
        f"| CPT(80%) | {100 * m['cpt80']:.1f}% | 80.0% | {100 * m['oracle_cpt80']:.1f}% |",
        f"| CPT(95%) | {100 * m['cpt95']:.1f}% | 95.0% | |",
        f"| AIQ (area under the convex hull) | {m['aiq']:.4f} | "
        f"{(m['weak_quality'] + m['strong_quality']) / 2:.4f} | |",
        f"| strong-call share at 95% of the strong model's quality | "
        f"{100 * m['share_at_95pct_strong_quality']:.1f}% | | |",
        f"| cost saved at 95% of the strong model's quality | "
        f"{100 * m['cost_saved_at_95pct_strong_quality']:.1f}% | | |",
        "", f"Cost: {m['prices']['assumption']}.", "",
        "![quality against cost](cost_quality.png)", "", "![reliability](reliability.png)", "",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
    return out / "report.md"
