"""Shared by the patch-model tests (U-Net, TempCNN): a controllable clock and a scripted learning curve."""

from __future__ import annotations

import numpy as np


class FakeClock:
    """A monotonic clock that advances ``step`` seconds each time it is read (each read stands for work done)."""

    def __init__(self, step: float):
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def scripted_scores(values, *, needs_validation: bool = False):
    """An on_epoch callback whose validation target is ``values[epoch - 1]`` (a controlled learning curve),
    and the list of epochs it was called for; ``needs_validation``: each call must get a finite training
    loss and a validation prediction."""
    seen: list[int] = []

    def on_epoch(epoch, loss, val_pred):
        if needs_validation:
            assert np.isfinite(loss) and val_pred is not None
        seen.append(epoch)
        return {"target": float(values[epoch - 1]), "val_crop_f1": 0.0}

    return on_epoch, seen
