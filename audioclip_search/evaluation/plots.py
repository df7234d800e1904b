"""PNG plots of an evaluation: confusion matrix, per-class accuracy, precision-recall curves.

matplotlib is imported on first use and drawn through its Agg canvas directly (no pyplot, no
global backend switch, no display needed). It is an optional dependency (the ``eval`` extra):
without it ``write_plots`` writes nothing and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_open
from .common import EvalResult

__all__ = ["plot_confusion", "plot_per_class", "plot_pr_curves", "write_plots"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", metadata={"Software": None})
    return path


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    n = len(class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    side = min(max(5.0, 0.16 * n + 3.0), 11.0)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fontsize = 8 if n <= 20 else 5
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(class_names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_per_class(accuracy: Sequence[float], class_names: Sequence[str], path: str | Path, title: str) -> Path:
    """Horizontal bars: top-1 accuracy (%) per class; classes without clips are left empty."""
    acc = np.asarray(accuracy, dtype=np.float64)
    n = len(class_names)
    fig = _figure(7.0, max(3.0, 0.2 * n + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(n), np.nan_to_num(acc), color="tab:blue")
    ax.set_yticks(range(n))
    ax.set_yticklabels(class_names, fontsize=8 if n <= 20 else 6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_pr_curves(curves: dict[str, np.ndarray], levels: Sequence[float], path: str | Path, title: str) -> Path:
    """Mean interpolated precision against recall, one line per querying direction."""
    fig = _figure(6.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        ax.plot(levels, np.asarray(curve) * 100.0, marker="o", markersize=3, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def write_plots(result: EvalResult, out_dir: str | Path) -> tuple[list[Path], str | None]:
    """The task's plots in ``out_dir``: (written files, None) or ([], why nothing was written)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], "matplotlib is not installed (pip install 'audioclip-search[eval]'): no plots written"
    out = Path(out_dir)
    title = result.dataset.get("title", "")
    written: list[Path] = []
    if result.task in ("zeroshot", "finetuned"):
        what = "zero-shot" if result.task == "zeroshot" else "fine-tuned"
        folds = [str(f) for f in result.settings.get("folds", []) if f is not None]
        which = f"fold{'s' if len(folds) > 1 else ''} {', '.join(folds)}" if folds else "all clips"
        written.append(plot_confusion(result.artifacts["confusion"], result.class_names, out / "confusion_matrix.png",
                                      f"{title} {what}: confusion ({which})"))
        written.append(plot_per_class(result.artifacts["per_class_accuracy"], result.class_names,
                                      out / "per_class_accuracy.png", f"{title} {what}: per-class top-1 accuracy"))
    elif result.task == "querying" and result.artifacts.get("pr_curves"):
        written.append(plot_pr_curves(result.artifacts["pr_curves"], result.artifacts["pr_recall_levels"],
                                      out / "pr_curves.png", f"{title} querying: precision-recall"))
    return written, None
