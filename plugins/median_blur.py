"""Postprocessor ``median_blur``: denoise the crop mask with :func:`cv2.medianBlur` (the seed used 5)."""

from __future__ import annotations

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError


class MedianBlur:
    def __init__(self, kernel: int = 5):
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"postprocessor.median_blur.kernel: must be an odd positive integer, got {kernel!r}")
        self.kernel = kernel
        self.halo = kernel // 2

    def apply(self, mask: np.ndarray) -> np.ndarray:
        import cv2

        if self.kernel == 1:
            return mask
        return cv2.medianBlur(np.ascontiguousarray(mask, dtype=np.uint8), self.kernel)


@hookimpl
def cropseg_register_postprocessors(register):
    register("median_blur", MedianBlur)
