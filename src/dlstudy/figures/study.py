"""Study-kind figures: the kinds compute the numbers (means, bands, projections) and these draw them.

    bar_figure(names, means, stds, path, ...)         one bar per arm with a ±1 std error bar (generic kind)
    curve_panels_figure(panels, path, ...)            mean ± std curves per arm, one axis per panel (optimizers)
    step_loss_figure(bands, path, ylabel)             per-step training loss bands on a log axis (optimizers)
    scatter_panels_figure(panels, path, max_classes)  2-D embeddings coloured by class, one axis per arm (losses)

Each saves a PNG at `path` and returns the path (None: nothing to draw).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dlstudy.figures.plots import save_figure

LOG_BAND_FLOOR = 0.2  # on log axes the band's lower edge is clipped at 1/5 of the mean (mean - std can be <= 0)
TAB20 = 20  # colours of the tab20 map: class c is drawn in colour c % 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Band:
    """One arm's curve: mean over seeds with a ±1 std band, drawn in colour `index` of tab10."""

    label: str
    index: int  # the arm's position in the study, so an arm keeps its colour across figures
    x: np.ndarray  # (T,)
    mean: np.ndarray  # (T,)
    std: np.ndarray  # (T,) NaN where no std (skipped in the band)


def bar_figure(names: Sequence[str], means: Sequence[float], stds: Sequence[float], path: Path, ylabel: str,
               title: str) -> Path:
    """One bar per name at its mean with a ±1 std error bar; the y axis starts at 0 (and ends at 1 for fractions)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.2))
    ax.bar(range(len(names)), list(means), yerr=list(stds), capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), list(names), rotation=30 if len(names) > 4 else 0, ha="right"
                  if len(names) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.0 if all(0 <= m <= 1 for m in means if m == m) else None)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _plot_band(ax, band: Band, colors, log_y: bool = False) -> None:
    """Mean line and a ±1 std band; on log axes the lower edge is clipped at LOG_BAND_FLOOR * mean."""
    x, mean, std = band.x, band.mean, band.std
    ok = np.isfinite(x) & np.isfinite(mean)
    marker = "o" if ok.sum() <= 12 else None  # a 1-epoch run is a single point: without a marker it is invisible
    color = colors[band.index % len(colors)]
    ax.plot(x[ok], mean[ok], label=band.label, color=color, lw=1.6, marker=marker, ms=4)
    ok_band = ok & np.isfinite(std)
    lower = np.maximum(mean - std, LOG_BAND_FLOOR * mean) if log_y else mean - std
    ax.fill_between(x[ok_band], lower[ok_band], (mean + std)[ok_band], color=color, alpha=0.2, lw=0)


def curve_panels_figure(panels: Sequence[tuple[str, Sequence[Band]]], path: Path, xlabel: str, ylabel: str,
                        log_y: bool = False) -> Path:
    """One axis per (title, bands) panel, side by side; the legend on the first axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, (title, bands) in zip(axes[0], panels):
        for band in bands:
            _plot_band(ax, band, colors, log_y)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path)


def step_loss_figure(bands: Sequence[Band], path: Path, ylabel: str) -> Path | None:
    """Per-step training loss bands against epochs on a log axis; None (nothing saved) when there are no bands."""
    if not bands:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.get_cmap("tab10").colors
    for band in bands:
        _plot_band(ax, band, colors, log_y=True)
    ax.set_yscale("log")
    ax.set_xlabel("epochs of training")
    ax.set_ylabel(ylabel)
    ax.set_title("per-step training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def scatter_panels_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, int]], path: Path,
                          max_classes: int = TAB20) -> Path:
    """One scatter per (title, xy (N, 2), labels (N,), number of classes): points coloured by class (labels below
    `max_classes` only); the title notes when classes were left out; one class legend on the right."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.8, 4.0), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("tab20")
    for ax, (title, xy, labels, n_cls) in zip(axes[0], panels):
        ax.scatter(xy[:, 0], xy[:, 1], c=labels % TAB20, cmap=cmap, vmin=0, vmax=TAB20 - 1, s=6, alpha=0.8, lw=0)
        ax.set_title(title + (f"\n(first {max_classes} of {n_cls} classes)" if n_cls > max_classes else ""),
                     fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.2)
    shown = np.unique(np.concatenate([labels for _, _, labels, _ in panels]))
    handles = [plt.Line2D([], [], ls="", marker="o", ms=4, color=cmap(int(c) % TAB20), label=str(c)) for c in shown]
    fig.legend(handles=handles, title="class", loc="outside right center", fontsize=7, title_fontsize=8)
    return save_figure(fig, path)
