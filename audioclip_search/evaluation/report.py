"""Reports: the paper's published figures, the JSON file, and the rich table with both side by side.

Paper figures (Guzhov et al., "AudioCLIP: Extending CLIP to Image, Text and Audio",
arXiv:2106.13043): Tables 2-3 for classification accuracy, Table 4 for querying (P@1, R@1, mAP),
each for the partially trained (audio head only) and the fully trained model. Our P@1/R@1 follow
the standard IR definitions (docs/metrics.md); the paper does not define its own, so its P@1/R@1
are shown as a reference, not as a like-for-like target.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_open
from .common import EvalResult, _jsonable

__all__ = [
    "PAPER_CLASSIFICATION",
    "PAPER_QUERYING",
    "PAPER_SOURCE",
    "build_report",
    "paper_reference",
    "print_report",
    "render_tables",
    "write_json",
]

PAPER_SOURCE = "Guzhov et al. 2021, AudioCLIP (arXiv:2106.13043), Tables 2-4"

#: Accuracy (%) by (dataset, task) for the "partial" (audio head only) and "full" training.
PAPER_CLASSIFICATION: dict[tuple[str, str], dict[str, float]] = {
    ("esc50", "zeroshot"): {"partial": 69.40, "full": 68.60},
    ("us8k", "zeroshot"): {"partial": 65.31, "full": 68.78},
    ("esc50", "finetuned"): {"partial": 96.65, "full": 97.15},
    ("us8k", "finetuned"): {"partial": 89.95, "full": 90.07},
}

#: Table 4 as printed: (dataset, direction, partial (P@1, R@1, mAP), full (P@1, R@1, mAP)), in %.
_Figures = tuple[float, float, float]
_Row = tuple[str, str, _Figures, _Figures]
_Querying = dict[str, dict[str, dict[str, dict[str, float]]]]
_TABLE_4: tuple[_Row, ...] = (
    ("imagenet", "text->image", (5.42, 84.15, 52.91), (1.61, 89.00, 33.13)),
    ("audioset", "text->image", (0.81, 46.79, 9.51), (1.31, 74.95, 17.22)),
    ("audioset", "text->audio", (2.51, 84.38, 23.54), (5.33, 76.13, 30.79)),
    ("audioset", "audio->image", (0.62, 56.39, 5.45), (1.03, 52.12, 7.22)),
    ("audioset", "image->audio", (0.61, 61.94, 4.86), (1.20, 53.15, 6.86)),
    ("us8k", "text->audio", (40.81, 47.69, 77.43), (42.28, 48.18, 80.04)),
    ("esc50", "text->audio", (51.25, 85.20, 77.20), (51.78, 80.40, 76.97)),
)
_QUERY_METRICS = ("P@1", "R@1", "mAP")


def _by_dataset(rows: tuple[_Row, ...]) -> _Querying:
    """Table rows -> dataset -> direction -> training -> {P@1, R@1, mAP}."""
    out: _Querying = {}
    for dataset, direction, partial, full in rows:
        out.setdefault(dataset, {})[direction] = {
            training: dict(zip(_QUERY_METRICS, figures, strict=True))
            for training, figures in (("partial", partial), ("full", full))}
    return out


#: Table 4: dataset -> direction -> training -> {P@1, R@1, mAP} (%).
PAPER_QUERYING = _by_dataset(_TABLE_4)


def paper_reference(dataset: str, task: str) -> dict[str, Any] | None:
    """The paper's figures for this dataset and task, or None where it published none."""
    if task in ("zeroshot", "finetuned"):
        ref = PAPER_CLASSIFICATION.get((dataset, task))
        return {"source": PAPER_SOURCE, "metric": "accuracy", "top1": ref} if ref else None
    if task == "querying":
        ref = PAPER_QUERYING.get(dataset)
        return {"source": PAPER_SOURCE, "metrics": list(_QUERY_METRICS), "directions": ref} if ref else None
    return None


def build_report(result: EvalResult, out_dir: str | Path | None = None, files: list[str] | None = None,
                 notes: list[str] | None = None) -> dict[str, Any]:
    """The JSON document: every figure, its settings, the paper's figures, and where things went."""
    report = result.to_json()
    report["paper"] = _jsonable(paper_reference(result.dataset.get("name", ""), result.task))
    report["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    report["output"] = {"dir": str(Path(out_dir).absolute()) if out_dir is not None else None,
                        "files": list(files or [])}
    report["notes"] = list(notes or [])
    if result.failures:
        report["notes"].append(f"{len(result.failures)} file(s) could not be read and were excluded from every "
                               f"figure; see 'failures'")
    return report


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` to ``path`` atomically (``fileio.atomic_open``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as fh:
        json.dump(report, fh, indent=2, allow_nan=False)
        fh.write("\n")
    return path


def _f(value: Any, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def render_tables(report: dict[str, Any]) -> list[Any]:
    """Rich renderables for a report dict (as ``build_report`` makes or reads back from JSON)."""
    from rich import box
    from rich.table import Table

    task = report["task"]
    ds = report["dataset"]
    settings = report["settings"]
    paper = report.get("paper") or {}
    out = report.get("output", {})
    caption_lines = [f"model: {settings.get('model')}  template: {settings.get('template')!r}  "
                     f"device: {settings.get('device')}/{settings.get('precision')}"]
    if out.get("dir"):
        caption_lines.append(f"written to: {out['dir']}  ({', '.join(out.get('files', [])) or 'nothing'})")
    if report.get("failures"):
        caption_lines.append(f"{len(report['failures'])} unreadable file(s) excluded (listed in report.json)")
    if paper:
        caption_lines.append(f"paper: {paper['source']}")
    caption = "\n".join(caption_lines)
    tables: list[Any] = []
    paper_style = "dim italic"
    if task in ("zeroshot", "finetuned"):
        what = "Zero-shot" if task == "zeroshot" else "Fine-tuned"
        table = Table(title=f"{what} classification: {ds['title']} ({ds['classes']} classes)", caption=caption)
        for col in ("split", "clips", "top-1 %", "top-5 %", "class mAP %"):
            table.add_column(col, justify="left" if col == "split" else "right", no_wrap=True)
        for s in report["splits"]:
            excluded = f" (-{s['excluded']})" if s.get("excluded") else ""
            table.add_row(s["split"], f"{s['n']}{excluded}", _f(s["top1"]), _f(s["top5"]), _f(s["class_mAP"]))
        summ = report["summary"]
        table.add_row("[bold]mean (ours)[/bold]", str(summ["n"]), f"[bold]{_f(summ['top1'])}[/bold]",
                      _f(summ["top5"]), _f(summ["class_mAP"]), end_section=bool(paper))
        ref = (paper.get("top1") or {}) if paper else {}
        for training in ("partial", "full"):
            if training in ref:
                table.add_row(f"paper, {training} training", "", _f(ref[training]), "", "", style=paper_style)
        tables.append(table)
    elif task == "querying":
        table = Table(title=f"Querying: {ds['title']} (relevant = same label set)", caption=caption,
                      box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
        metric_cols = ("P@1", "R@1", "mAP", "R@5", "R@10", "MRR")
        for col in ("direction", "split", "n", *metric_cols):
            table.add_column(col, justify="left" if col in ("direction", "split") else "right", no_wrap=True)
        refs = (paper.get("directions") or {}) if paper else {}
        for name, summ in report["summary"]["directions"].items():
            rows = [s for s in report["splits"] if name in s["directions"]]
            if len(rows) > 1:
                for s in rows:
                    d = s["directions"][name]
                    table.add_row(name if s is rows[0] else "", s["split"], str(d["queries"]),
                                  *(_f(d[k]) for k in metric_cols))
            label = "mean" if len(rows) > 1 else rows[0]["split"]
            table.add_row("" if len(rows) > 1 else f"[bold]{name}[/bold]", f"[bold]{label}[/bold]",
                          str(summ["queries"]),
                          *(f"[bold]{_f(summ[k])}[/bold]" for k in metric_cols))
            for training in ("partial", "full"):
                ref = refs.get(name, {}).get(training)
                if ref:
                    table.add_row("", f"paper {training}", "", *(_f(ref[k]) if k in ref else "" for k in metric_cols),
                                  style=paper_style)
            table.rows[-1].end_section = True
        tables.append(table)
    if report.get("failures"):
        fails = Table(title="Excluded files (could not be read)")
        fails.add_column("path", overflow="fold")
        fails.add_column("reason", overflow="fold")
        for f in report["failures"][:20]:
            fails.add_row(f["path"], f["reason"])
        if len(report["failures"]) > 20:
            fails.add_row(f"... and {len(report['failures']) - 20} more", "")
        tables.append(fails)
    return tables


def print_report(report: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console

    console = console or Console()
    for table in render_tables(report):
        console.print(table)
