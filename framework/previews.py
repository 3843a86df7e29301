"""PNG previews of a run (read decimated, so memory stays bounded) and report figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .raster import decimated_read
from .types import CROP, IGNORE, NONCROP, Scene

PALETTE = {NONCROP: (222, 203, 164), CROP: (46, 139, 58), IGNORE: (255, 255, 255)}
DISAGREEMENT = {  # (truth, prediction) -> colour
    (CROP, CROP): ((46, 139, 58), "crop, correct"),
    (NONCROP, NONCROP): ((222, 203, 164), "non-crop, correct"),
    (NONCROP, CROP): ((214, 39, 40), "false crop (commission)"),
    (CROP, NONCROP): ((31, 119, 180), "missed crop (omission)"),
}


def _hex(rgb: Sequence[int]) -> str:
    """``#rrggbb`` of an RGB triple (0..255), for matplotlib."""
    r, g, b = (int(v) for v in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _figure(img: np.ndarray, title: str, legend: list[tuple[tuple[int, int, int], str]] | None = None) -> Figure:
    h, w = img.shape[:2]
    fig = Figure(figsize=(8, 8 * h / max(w, 1) + 0.6), dpi=100)
    ax = fig.add_axes((0, 0, 1, 0.94 if legend is None else 0.9))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    if legend:
        fig.legend(
            handles=[Patch(color=_hex(c), label=t) for c, t in legend],
            loc="lower center",
            ncol=len(legend),
            fontsize=8,
            frameon=False,
        )
    return fig


def rgb_composite(scene: Scene, max_side: int) -> np.ndarray:
    """True-colour composite (red, green, blue reflectance, 2-98 % stretch) of the scene, decimated; a
    scene without red, green and blue bands (e.g. NDVI only) shows its first band in grey."""
    roles = list(scene.base_band_names)
    pos = [roles.index(r) for r in ("red", "green", "blue")] if {"red", "green", "blue"} <= set(roles) else [0, 0, 0]
    with rasterio.open(scene.path) as src:
        bands = [scene.bands[i] for i in pos]
        dn = decimated_read(src, max_side, bands=list(bands), window=scene.window).astype(np.float32)
    gains = np.asarray([scene.gains[i] for i in pos], dtype=np.float32)[:, None, None]
    offsets = np.asarray([(scene.offsets or (0.0,) * len(roles))[i] for i in pos], dtype=np.float32)[:, None, None]
    valid = ~np.all(dn == scene.nodata, axis=0) if scene.nodata is not None else np.ones(dn.shape[1:], bool)
    refl = dn * gains + offsets
    out = np.zeros((*dn.shape[1:], 3), dtype=np.uint8)
    if valid.any():
        for i in range(3):
            lo, hi = np.percentile(refl[i][valid], [2, 98])
            out[..., i] = np.clip((refl[i] - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    out[~valid] = 255
    return out


def _classes(path: Path, max_side: int) -> np.ndarray:
    with rasterio.open(path) as src:
        return decimated_read(src, max_side)


def _paint(codes: np.ndarray) -> np.ndarray:
    img = np.full((*codes.shape, 3), 255, dtype=np.uint8)
    for code, colour in PALETTE.items():
        img[codes == code] = colour
    return img


def write_previews(scene: Scene, labels: Path, mask: Path, out_dir: Path, max_side: int = 1024) -> list[Path]:
    """Write rgb.png, ground_truth.png, prediction.png and disagreement.png for the test scene."""
    out_dir.mkdir(parents=True, exist_ok=True)
    truth, pred = _classes(labels, max_side), _classes(mask, max_side)
    legend = [(PALETTE[CROP], "crop"), (PALETTE[NONCROP], "non-crop"), ((200, 200, 200), "no data / ignored")]
    dis = np.full((*truth.shape, 3), 255, dtype=np.uint8)
    for (t, p), (colour, _) in DISAGREEMENT.items():
        dis[(truth == t) & (pred == p)] = colour
    synthetic = " [SYNTHETIC]" if scene.metadata.get("synthetic") else ""
    sid = scene.metadata.get("scene_id", scene.name)
    figs = {
        "rgb": _figure(rgb_composite(scene, max_side), f"{sid} true colour{synthetic}"),
        "ground_truth": _figure(_paint(truth), f"ground truth{synthetic}", legend),
        "prediction": _figure(_paint(pred), "prediction (postprocessed)", legend),
        "disagreement": _figure(dis, "prediction vs ground truth", [v for v in DISAGREEMENT.values()]),
    }
    paths = []
    for name, fig in figs.items():
        png = out_dir / f"{name}.png"
        fig.savefig(png)
        paths.append(png)
    return paths


def confusion_figure(cm_post: np.ndarray, cm_raw: np.ndarray) -> Figure:
    """Confusion matrices (test scene) before and after postprocessing, counts and row-normalised."""
    fig = Figure(figsize=(9, 4), dpi=100)
    for i, (cm, title) in enumerate(((cm_raw, "before postprocessing"), (cm_post, "after postprocessing"))):
        ax = fig.add_subplot(1, 2, i + 1)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Greens", vmin=0, vmax=1)
        for r in range(2):
            for c in range(2):
                ax.text(
                    c,
                    r,
                    f"{cm[r, c]:,}\n{norm[r, c]:.1%}",
                    ha="center",
                    va="center",
                    color="white" if norm[r, c] > 0.5 else "black",
                    fontsize=9,
                )
        ax.set_xticks([0, 1], ["non-crop", "crop"])
        ax.set_yticks([0, 1], ["non-crop", "crop"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(f"test scene, {title}", fontsize=10)
    fig.tight_layout()
    return fig
