"""Plots of the segmentation report, rendered to base64 PNG strings.

Every function takes plain, already-filtered data (suppressed segments carry no
values here) and returns the PNG as a base64 string, or ``None`` when there is
nothing to draw. Figures are always closed.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "figure_to_base64",
    "plot_cost_per_round",
    "plot_privacy_spend",
    "plot_profile_heatmap",
    "plot_segment_sizes",
]

_BLUE = "#2f6db5"
_GREY = "#b8b8b8"
_MAX_TICKS = 30


def _label(text: object, width: int = 40) -> str:
    """Make a string safe for matplotlib (no mathtext) and shorten it."""
    s = str(text).replace("$", r"\$")
    return s if len(s) <= width else s[: width - 1] + "…"


def figure_to_base64(fig: Figure) -> str:
    """Render a figure to a base64-encoded PNG and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to render.

    Returns
    -------
    str
        The PNG bytes, base64-encoded (ASCII).
    """
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_segment_sizes(
    ids: Sequence[int],
    sizes: Sequence[float | None],
    min_size: float | None,
) -> str | None:
    """Bar chart of noisy segment sizes; suppressed segments (size ``None``) hatched grey.

    Suppressed bars are drawn at the publication threshold, labelled ``< N``
    and never show their noisy size.
    """
    if not ids:
        return None
    published = [s for s in sizes if s is not None]
    floor = float(min_size) if min_size else (max(published, default=1.0) * 0.05 or 1.0)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(ids) + 2), 3.6))
    x = np.arange(len(ids))
    for xi, size in zip(x, sizes, strict=True):
        if size is None:
            ax.bar(xi, floor, color=_GREY, hatch="//", edgecolor="#777777")
            ax.annotate(f"< {floor:,.0f}", (xi, floor), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points", color="#555555")
        else:
            height = max(float(size), 0.0)
            ax.bar(xi, height, color=_BLUE)
            ax.annotate(f"≈{height:,.0f}", (xi, height), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [str(i) for i in ids])
    ax.set_xlabel("segment")
    ax.set_ylabel("customers (noisy)")
    ax.set_title("Segment sizes (grey: suppressed, too small)")
    ax.margins(y=0.15)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_base64(fig)


def plot_profile_heatmap(
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    values: Sequence[Sequence[float]],
) -> str | None:
    """Heatmap of published segment profiles (rows: segments, columns: features)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.size == 0 or not np.isfinite(arr).any():
        return None
    vmax = float(np.nanmax(np.abs(arr[np.isfinite(arr)]))) or 1.0
    n_rows, n_cols = arr.shape
    fig, ax = plt.subplots(figsize=(min(16.0, 4.0 + 0.8 * n_cols), 2.0 + 0.5 * n_rows))
    im = ax.imshow(arr, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_cols), [_label(c, 28) for c in col_labels], rotation=40, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(n_rows), [_label(r) for r in row_labels])
    if arr.size <= 240:
        for (i, j), v in np.ndenumerate(arr):
            if math.isfinite(v):
                colour = "white" if abs(v) > 0.6 * vmax else "black"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    ax.set_title("Segment profiles (scaled centre / category share)")
    return figure_to_base64(fig)


def plot_cost_per_round(
    rounds: Sequence[float],
    costs: Sequence[float],
    centralized: float | None = None,
) -> str | None:
    """Line plot of the k-means cost per round, with the centralized cost dashed."""
    if not rounds or len(rounds) != len(costs):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(rounds, costs, marker="o", color=_BLUE, label="federated (noisy)")
    if centralized is not None and math.isfinite(centralized):
        ax.axhline(centralized, linestyle="--", color="#c0392b", label="centralized (pooled)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("k-means cost")
    ax.set_title("k-means cost per round")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_base64(fig)


def plot_privacy_spend(
    labels: Sequence[str],
    mus: Sequence[float | None],
    eps_cumulative: Sequence[float | None],
    eps_target: float | None = None,
) -> str | None:
    """Bars of the privacy loss μ per release and the cumulative ε as a step plot."""
    mu = np.array([m if m is not None else np.nan for m in mus], dtype=float)
    eps = np.array([e if e is not None else np.nan for e in eps_cumulative], dtype=float)
    if not labels or not (np.isfinite(mu).any() or np.isfinite(eps).any()):
        return None
    n = len(labels)
    x = np.arange(n)
    step = max(1, math.ceil(n / _MAX_TICKS))
    ticks = x[::step]
    tick_labels = [_label(labels[i], 26) for i in ticks]
    fig, (ax_mu, ax_eps) = plt.subplots(1, 2, figsize=(min(16.0, 6.0 + 0.35 * n), 3.8))
    ax_mu.bar(x, np.where(np.isfinite(mu), mu, 0.0), color=_BLUE)
    ax_mu.set_ylabel("μ (Gaussian DP) per release")
    ax_mu.set_title("Privacy loss per release")
    ax_eps.step(x, np.where(np.isfinite(eps), eps, np.nan), where="post", color=_BLUE,
                marker="o", markersize=3, label="cumulative ε")
    if eps_target is not None and math.isfinite(eps_target):
        ax_eps.axhline(eps_target, linestyle="--", color="#c0392b", label="ε budget")
    ax_eps.set_ylim(bottom=0)
    ax_eps.set_ylabel("cumulative ε")
    ax_eps.set_title("Cumulative ε")
    ax_eps.legend(frameon=False, loc="best")
    for ax in (ax_mu, ax_eps):
        ax.set_xticks(ticks, tick_labels, rotation=45, ha="right", fontsize=7,
                      rotation_mode="anchor")
        ax.spines[["top", "right"]].set_visible(False)
    return figure_to_base64(fig)


def plot_k_curve(ks: Sequence[int], scores: Sequence[float], feasible: Sequence[bool],
                 chosen: int) -> str | None:
    """The ``--k auto`` curve: silhouette per k, infeasible k hollow, the chosen k marked."""
    if not ks or len(ks) != len(scores):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(ks, scores, color=_BLUE, zorder=1)
    ax.scatter(ks, scores, c=[_BLUE if ok else "white" for ok in feasible], edgecolors=_BLUE,
               zorder=2, label="k (hollow: a segment too small to publish)")
    ax.axvline(chosen, linestyle="--", color="#c0392b", label=f"chosen k = {chosen}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of segments k")
    ax.set_ylabel("weighted silhouette")
    ax.set_title("Choosing k from the private start")
    ax.legend(frameon=False, fontsize="small")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_base64(fig)
