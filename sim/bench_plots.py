"""Plots of the utility benchmarks: a metric against epsilon, one panel per partner count.

epsilon is drawn on a log axis; epsilon = inf (no noise) sits at its own tick to the right,
past a dotted separator. Reference values (centralized fit, non-private baselines) are
horizontal lines; one far above the curves is written at the top of the panel instead, so
that it does not flatten the curves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from fedprofile.sim.bench import BaselineRow, ResponseRow, UtilityRow

__all__ = ["Curve", "Panel", "plot_against_epsilon", "response_panels", "segment_panels"]

_REFERENCE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))
_OFF_SCALE = 1.5
"""A reference further above the curves than this many curve spans is written, not drawn."""


@dataclass(frozen=True)
class Curve:
    """One line: a metric's mean and standard deviation over seeds at each epsilon."""

    label: str
    epsilons: Sequence[float]
    means: Sequence[float]
    sds: Sequence[float]


@dataclass(frozen=True)
class Panel:
    """One panel: its curves and the horizontal reference lines (label -> value)."""

    title: str
    curves: Sequence[Curve]
    references: Mapping[str, float] = field(default_factory=dict)


def _x_positions(epsilons: Sequence[float], finite_max: float) -> np.ndarray:
    """Epsilons as x positions; inf at four times the largest finite epsilon."""
    return np.array([4.0 * finite_max if math.isinf(e) else e for e in epsilons])


def plot_against_epsilon(path: Path, panels: Sequence[Panel], *, ylabel: str,
                         title: str) -> Path:
    """Draw the panels side by side (shared y axis) and write a PNG to ``path``."""
    epsilons = sorted({e for p in panels for c in p.curves for e in c.epsilons})
    finite = [e for e in epsilons if math.isfinite(e)] or [1.0]
    ticks = _x_positions(epsilons, max(finite))
    lows = [m - s for p in panels for c in p.curves for m, s in zip(c.means, c.sds, strict=True)]
    highs = [m + s for p in panels for c in p.curves
             for m, s in zip(c.means, c.sds, strict=True)]
    span = max(max(highs) - min(lows), 0.02)
    limit = max(highs) + _OFF_SCALE * span
    shown = [v for p in panels for v in p.references.values() if v <= limit]
    bottom, top = min(lows + shown), max(highs + shown)
    pad = 0.08 * (top - bottom or span)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 0.6, 5.0),
                             sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for curve in panel.curves:
            ax.errorbar(_x_positions(curve.epsilons, max(finite)), curve.means,
                        yerr=curve.sds, marker="o", ms=4, capsize=3, label=curve.label)
        off_scale = []
        for (name, value), style in zip(panel.references.items(), _REFERENCE_STYLES,
                                        strict=False):
            if value <= limit:
                ax.axhline(value, color="0.35", lw=1, ls=style, label=f"{name} ({value:.3f})")
            else:
                off_scale.append(f"{name}: {value:.3f} (off scale)")
        if off_scale:
            ax.text(0.02, 0.98, "↑ " + "\n↑ ".join(off_scale), transform=ax.transAxes,
                    va="top", fontsize=7, color="0.25")
        if any(math.isinf(e) for e in epsilons):
            ax.axvline(2.0 * max(finite), color="0.75", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xticks(ticks, ["∞" if math.isinf(e) else f"{e:g}" for e in epsilons])
        ax.minorticks_off()
        ax.set_xlabel("ε (δ = 1e-6)")
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].set_ylim(bottom - pad, top + 2 * pad)
    fig.suptitle(title, fontsize=11)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=80, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def segment_panels(rows: Sequence[UtilityRow], baselines: Sequence[BaselineRow]
                   ) -> list[Panel]:
    """One panel per partner count: cost ratio per init, the baselines as references."""
    panels = []
    for base in baselines:
        mine = [r for r in rows if r.partners == base.partners]
        curves = []
        for init in dict.fromkeys(r.init for r in mine):
            of = [r for r in mine if r.init == init]
            curves.append(Curve(f"federated DP, init={init}", [r.epsilon for r in of],
                                [r.ratio_mean for r in of], [r.ratio_sd for r in of]))
        panels.append(Panel(f"{base.partners} partners", curves, {
            "centralized k-means": 1.0,
            "averaged local centres, matched": base.averaged_local_centres,
            "averaged local centres, index-aligned": base.averaged_index_aligned,
            "partners alone (mean)": base.partners_alone_mean}))
    return panels


def response_panels(rows: Sequence[ResponseRow]) -> list[Panel]:
    """One panel per partner count: the federated metric, the centralized one as reference."""
    panels = []
    for n in dict.fromkeys(r.partners for r in rows):
        mine = [r for r in rows if r.partners == n]
        panels.append(Panel(f"{n} partners", [Curve(
            f"federated DP {mine[0].metric}", [r.epsilon for r in mine],
            [r.federated_mean for r in mine], [r.federated_sd for r in mine])],
            {f"centralized {mine[0].metric}": mine[0].centralized}))
    return panels
