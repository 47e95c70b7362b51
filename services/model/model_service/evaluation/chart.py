"""The evaluation's chart, a PNG drawn with matplotlib's Agg renderer (no display, no pyplot
state shared between threads): the confusion matrix of a classification model (or the per-class
AP of a detection model) and, after a training, its curves per epoch (accuracy, then loss).
"""
from __future__ import annotations

import io

from mlstudio.common.lazy import lazy_module

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

MAX_ANNOTATED_CLASSES = 25  # past it, cells are too small to print their counts


def _confusion(axes, report: dict) -> None:
    labels = report["confusion_matrix"]["labels"]
    matrix = np.array(report["confusion_matrix"]["matrix"], dtype=np.int64).reshape(len(labels), len(labels))
    image = axes.imshow(matrix, cmap="Blues", vmin=0)
    axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"confusion matrix (accuracy {report['accuracy']:.2f}, {report['images']} images)")
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        high = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center", color="white" if count > high else "black")


def _average_precision(axes, report: dict) -> None:
    rows = [row for row in report["classes"] if row["support"]]
    positions = np.arange(len(rows))
    axes.bar(positions - 0.2, [row["ap50"] or 0 for row in rows], 0.4, label="AP@0.5")
    axes.bar(positions + 0.2, [row["ap"] or 0 for row in rows], 0.4, label="AP@0.5:0.95")
    axes.set_xticks(positions, [row["label"] for row in rows], rotation=45, ha="right")
    axes.set_ylim(0, 1)
    axes.legend()
    map50 = "n/a" if report["map50"] is None else f"{report['map50']:.2f}"
    axes.set_title(f"average precision per class (mAP@0.5 {map50}, {report['images']} images)")


def _curves(axes, curves: dict, kind: str) -> None:
    epochs = curves["epochs"]
    for name in sorted(curves["metrics"]):
        if kind in name:
            values = [np.nan if value is None else value for value in curves["metrics"][name]]
            axes.plot(epochs, values, marker="o", markersize=3, label=name)
    axes.set_xlabel("epoch")
    axes.set_title(kind)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()


def render(report: dict, curves: dict | None = None) -> bytes:
    """The PNG of an evaluation `report` (metrics.classification_report or detection_report) and,
    when given, the training `curves` ({epochs, metrics: {name: [value per epoch]}})."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_curves = bool(curves and curves.get("epochs"))
    classes = len(report["classes"])
    side = min(14.0, max(5.0, 0.45 * classes + 3))
    figure = Figure(figsize=(side + (10 if with_curves else 0), side), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 3 if with_curves else 1, squeeze=False)[0]
    if "confusion_matrix" in report:
        _confusion(panels[0], report)
    else:
        _average_precision(panels[0], report)
    if with_curves:
        _curves(panels[1], curves, "accuracy")
        _curves(panels[2], curves, "loss")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
