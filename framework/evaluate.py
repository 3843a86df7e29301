"""Streaming evaluation: confusion matrices accumulated over blocks, then scikit-learn's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .raster import iter_windows
from .types import CLASS_NAMES, IGNORE


def confusion_from_rasters(truth_path: Path, pred_path: Path, block: int = 1024) -> np.ndarray:
    """2x2 confusion matrix (rows truth non-crop/crop, columns prediction) over pixels labelled in both."""
    cm = np.zeros(4, dtype=np.int64)
    with rasterio.open(truth_path) as t, rasterio.open(pred_path) as p:
        if (t.width, t.height) != (p.width, p.height) or t.transform != p.transform:
            raise ValueError(f"{pred_path} is not on the grid of {truth_path}")
        for w in iter_windows(t.height, t.width, block):
            cm += confusion_block(t.read(1, window=w), p.read(1, window=w)).ravel()
    return cm.reshape(2, 2)


def confusion_block(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    m = (truth != IGNORE) & (pred != IGNORE)
    idx = truth[m].astype(np.int64) * 2 + pred[m]
    return np.bincount(idx, minlength=4)[:4].reshape(2, 2)


def classification_report(cm: np.ndarray) -> tuple[dict[str, Any], str]:
    """scikit-learn's ``classification_report`` (dict and text) computed exactly from a confusion matrix
    (each cell is one (truth, prediction) pair weighted by its count)."""
    from sklearn.metrics import classification_report as skreport

    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 0, 1])
    w = np.asarray(cm, dtype=np.float64).ravel()
    kwargs = {"labels": [0, 1], "target_names": list(CLASS_NAMES), "sample_weight": w, "zero_division": 0}
    as_dict = skreport(y_true, y_pred, output_dict=True, digits=4, **kwargs)
    for vals in as_dict.values():  # supports are pixel counts (the weights make them floats)
        if isinstance(vals, dict):
            vals["support"] = int(round(vals["support"]))
    return as_dict, report_text(as_dict)


def report_text(report: dict[str, Any], digits: int = 4) -> str:
    """scikit-learn's text layout of a classification report dict, supports as integers."""
    rows = [k for k, v in report.items() if isinstance(v, dict) and not k.endswith(" avg")]
    avgs = [k for k in ("macro avg", "weighted avg") if k in report]
    width = max(len(k) for k in [*rows, *avgs, "accuracy"])
    cols = ("precision", "recall", "f1-score", "support")
    out = " " * width + " " + "".join(f" {h:>9}" for h in cols) + "\n\n"
    line = "{:>{w}s} " + f" {{:>9.{digits}f}}" * 3 + " {:>9d}\n"
    for k in rows:
        v = report[k]
        out += line.format(k, v["precision"], v["recall"], v["f1-score"], int(v["support"]), w=width)
    out += "\n"
    if "accuracy" in report:
        support = int(report[avgs[0]]["support"]) if avgs else 0
        out += f"{'accuracy':>{width}s} " + " " * 20 + f" {report['accuracy']:>9.{digits}f} {support:>9d}\n"
    for k in avgs:
        v = report[k]
        out += line.format(k, v["precision"], v["recall"], v["f1-score"], int(v["support"]), w=width)
    return out


def iou(cm: np.ndarray) -> float:
    """Intersection over union of the crop class."""
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    denom = tp + fp + fn
    return float(tp / denom) if denom else 0.0


def report_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """Flatten a report dict into metric names like ``test_crop_precision`` / ``test_weighted_avg_f1``."""
    out: dict[str, float] = {}
    for key, val in report.items():
        name = key.replace("-", "").replace(" ", "_")
        if isinstance(val, dict):
            for mk, mv in val.items():
                mname = mk.replace("-score", "")
                out[f"{prefix}_{name}_{mname}"] = float(mv)
        else:
            out[f"{prefix}_{name}"] = float(val)
    return out
