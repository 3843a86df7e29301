"""PNG previews of a run (read decimated, so memory stays bounded) and report figures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


def _stretch(refl: np.ndarray, valid: np.ndarray, clear: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 of red, green, blue reflectance ``(3, h, w)``: a 2-98 % stretch over the ``clear`` pixels
    (so clouds do not set it; all valid pixels when none is clear), white where not ``valid``."""
    basis = valid if clear is None or not (clear & valid).any() else clear & valid
    out = np.zeros((*refl.shape[1:], 3), dtype=np.uint8)
    if basis.any():
        for i in range(3):
            lo, hi = np.percentile(refl[i][basis], [2, 98])
            out[..., i] = np.clip((refl[i] - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    out[~valid] = 255
    return out


def _rgb_positions(scene: Scene) -> list[int]:
    """Positions of red, green and blue among the scene's bands (by role), or the first band three times."""
    roles = list(scene.base_band_names)
    return [roles.index(r) for r in ("red", "green", "blue")] if {"red", "green", "blue"} <= set(roles) else [0, 0, 0]


def rgb_composite(scene: Scene, max_side: int) -> np.ndarray:
    """True-colour composite (red, green, blue reflectance, 2-98 % stretch) of the scene (of a time stack:
    its first date), decimated; a scene without red, green and blue bands (e.g. NDVI only) shows its first
    band in grey."""
    roles = list(scene.base_band_names)
    pos = _rgb_positions(scene)
    with rasterio.open(scene.path) as src:
        bands = [scene.bands[i] for i in pos]
        dn = decimated_read(src, max_side, bands=list(bands), window=scene.window).astype(np.float32)
    gains = np.asarray([scene.gains[i] for i in pos], dtype=np.float32)[:, None, None]
    offsets = np.asarray([(scene.offsets or (0.0,) * len(roles))[i] for i in pos], dtype=np.float32)[:, None, None]
    valid = ~np.all(dn == scene.nodata, axis=0) if scene.nodata is not None else np.ones(dn.shape[1:], bool)
    return _stretch(dn * gains + offsets, valid)


#: source rows of a date read at once for its preview: the files are opened and closed per strip, so GDAL's
#: block cache (which keeps every block a dataset decoded until it closes) holds one strip, not the scene
PREVIEW_STRIP_ROWS = 512


def date_composites(scene: Scene, max_side: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(date, true-colour composite)`` for every date of a time stack, one date at a time, each on the
    scene's grid (dates on another grid warped onto it) and decimated to at most ``max_side`` pixels per
    side, read in strips of :data:`PREVIEW_STRIP_ROWS` source rows (memory stays bounded as scenes grow);
    the stretch of each date leaves out what its usable-data mask (udm2) does not call clear. A single
    image gives one item, its acquisition date (or ``""``) and :func:`rgb_composite`."""
    import dataclasses

    if not scene.acquisitions:
        yield str(scene.metadata.get("acquired") or "")[:10], rgb_composite(scene, max_side)
        return
    grid = scene.grid
    f = max(1.0, max(grid.height, grid.width) / max_side)
    oh, ow = max(1, round(grid.height / f)), max(1, round(grid.width / f))
    fh = grid.height / oh
    step = max(1, int(PREVIEW_STRIP_ROWS // fh))
    first = scene.acquisitions[0]
    pos = _rgb_positions(scene)
    for t, a in enumerate(scene.acquisitions):
        # the first date (whose grid is the scene's) and this one: only this one is read
        one = dataclasses.replace(scene, acquisitions=(a,) if t == 0 else (first, a))
        dn = np.zeros((3, oh, ow), dtype=np.float32)
        valid = np.zeros((oh, ow), dtype=bool)
        clear: np.ndarray | None = None
        for o0 in range(0, oh, step):
            o1 = min(oh, o0 + step)
            d, v, c = _strip(one, pos, grid.width, o0 * fh, (o1 - o0) * fh, (o1 - o0, ow))
            dn[:, o0:o1], valid[o0:o1] = d, v
            if c is not None:
                clear = np.ones((oh, ow), dtype=bool) if clear is None else clear
                clear[o0:o1] = c
        gains = np.asarray([a.gains[i] for i in pos], dtype=np.float32)[:, None, None]
        offs = np.asarray(a.offsets or (0.0,) * len(a.bands), dtype=np.float32)
        offsets = np.asarray([offs[i] for i in pos], dtype=np.float32)[:, None, None]
        yield a.date, _stretch(dn * gains + offsets, valid, clear)


def _strip(
    scene: Scene, pos: list[int], width: int, row0: float, rows: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Red, green, blue DN (the bands at ``pos``), valid (not nodata) and clear (usable raster) of the LAST date of ``scene``, for
    source rows ``row0 .. row0 + rows`` (fractional) decimated to ``shape``; the files closed afterwards."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with scene.reader() as reader:
        fwin = reader._file_window(Window(0, row0, width, rows))
        a, src, usable, *_ = reader._dates[-1]  # type: ignore[attr-defined]
        idx = [a.bands[i] for i in pos]
        dn = src.read(idx, window=fwin, out_shape=(3, *shape), resampling=Resampling.nearest).astype(np.float32)
        if a.nodata is not None:
            valid = ~np.all(dn == a.nodata, axis=0)
        else:
            valid = np.all(src.read_masks(idx, window=fwin, out_shape=(3, *shape)) > 0, axis=0)
        clear = None
        if usable is not None:
            clear = usable.read(a.usable_band, window=fwin, out_shape=shape, resampling=Resampling.nearest) > 0
    return dn, valid, clear


def _classes(path: Path, max_side: int) -> np.ndarray:
    with rasterio.open(path) as src:
        return decimated_read(src, max_side)


def _paint(codes: np.ndarray) -> np.ndarray:
    img = np.full((*codes.shape, 3), 255, dtype=np.uint8)
    for code, colour in PALETTE.items():
        img[codes == code] = colour
    return img


def write_previews(scene: Scene, labels: Path, mask: Path, out_dir: Path, max_side: int = 1024) -> list[Path]:
    """Write rgb.png (a time stack: rgb_<date>.png for every date), ground_truth.png, prediction.png and
    disagreement.png for the test scene."""
    out_dir.mkdir(parents=True, exist_ok=True)
    truth, pred = _classes(labels, max_side), _classes(mask, max_side)
    legend = [(PALETTE[CROP], "crop"), (PALETTE[NONCROP], "non-crop"), ((200, 200, 200), "no data / ignored")]
    dis = np.full((*truth.shape, 3), 255, dtype=np.uint8)
    for (t, p), (colour, _) in DISAGREEMENT.items():
        dis[(truth == t) & (pred == p)] = colour
    synthetic = " [SYNTHETIC]" if scene.metadata.get("synthetic") else ""
    sid = scene.metadata.get("scene_id", scene.name)
    paths = []

    def save(name: str, fig: Figure) -> None:
        png = out_dir / f"{name}.png"
        fig.savefig(png)
        paths.append(png)

    if scene.acquisitions:  # one true-colour preview per date, named by it (written one date at a time)
        n = len(scene.acquisitions)
        for t, (day, img) in enumerate(date_composites(scene, max_side)):
            sid_t = scene.acquisitions[t].metadata.get("scene_id") or sid
            save(f"rgb_{day}", _figure(img, f"{sid_t} {day} (date {t + 1} of {n}) true colour{synthetic}"))
    else:
        save("rgb", _figure(rgb_composite(scene, max_side), f"{sid} true colour{synthetic}"))
    save("ground_truth", _figure(_paint(truth), f"ground truth{synthetic}", legend))
    save("prediction", _figure(_paint(pred), "prediction (postprocessed)", legend))
    save("disagreement", _figure(dis, "prediction vs ground truth", [v for v in DISAGREEMENT.values()]))
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
