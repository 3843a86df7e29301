"""Readable names for runs: the classifier with its chosen hyperparameters and the features
(``knn k=9 | bands``), used as MLflow run names and by ``cropseg compare``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: fit params that are bookkeeping, not chosen hyperparameters
FIT_BOOKKEEPING = ("cv", "cv_folds", "cv_scoring", "n_iter")


def fmt_value(value: Any) -> str:
    """A short form of a parameter value: ``0.0001`` -> ``1e-04``, ``7.0`` -> ``7``, lists joined by commas."""
    if isinstance(value, list | tuple):
        return ",".join(fmt_value(v) for v in value)
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    text = str(value)
    try:
        x = float(text)
    except ValueError:
        return text
    if x.is_integer() and abs(x) < 1e6 and "e" not in text.lower():
        return str(int(x))
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.0e}"


def chosen_label(params: Mapping[str, Any]) -> str:
    """``{"k": 9}`` -> ``k=9``: the hyperparameters a fit chose (bookkeeping keys left out)."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items() if k not in FIT_BOOKKEEPING)


def run_label(classifier: str, chosen: str, features: str) -> str:
    """``knn k=9 | bands``."""
    return " | ".join(p for p in (f"{classifier} {chosen}".strip(), features) if p)
