"""Postprocessor ``median_blur``: denoise the crop mask with :func:`cv2.medianBlur` (the seed used 5).

OpenCV's median filter rejects large kernels on 8-bit images, so kernels above 255 use the exact
equivalent for a 0/1 mask: a pixel is 1 when more than half of the kernel's pixels are 1, counted with
:func:`cv2.boxFilter` (edges replicated, like ``medianBlur``).
"""

from __future__ import annotations

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError

#: the largest kernel: every block is read with ``kernel // 2`` extra pixels on each side
MAX_KERNEL = 2049
#: above this, OpenCV's medianBlur on uint8 fails; the box-count median takes over
CV2_MAX_KERNEL = 255


class MedianBlur:
    def __init__(self, kernel: int = 5):
        if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"postprocessor.median_blur.kernel: must be an odd positive integer, got {kernel!r}")
        if kernel > MAX_KERNEL:
            raise ConfigError(
                f"postprocessor.median_blur.kernel={kernel}: at most {MAX_KERNEL} (each block is read "
                f"with kernel // 2 extra pixels on every side)"
            )
        self.kernel = kernel
        self.halo = kernel // 2

    def apply(self, mask: np.ndarray) -> np.ndarray:
        import cv2

        if self.kernel == 1:
            return mask
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        if self.kernel <= CV2_MAX_KERNEL or mask.max(initial=0) > 1:
            return cv2.medianBlur(mask, self.kernel)
        ones = cv2.boxFilter(
            mask, cv2.CV_32S, (self.kernel, self.kernel), normalize=False, borderType=cv2.BORDER_REPLICATE
        )
        return (ones > (self.kernel * self.kernel) // 2).astype(np.uint8)


@hookimpl
def cropseg_register_postprocessors(register):
    register("median_blur", MedianBlur)
