"""Source ``local``: scenes from 4-band GeoTIFFs on disk.

Train and test come either from two files (``train_image`` / ``test_image``) or from one file cut by two
AOIs (``image`` + ``train_aoi`` / ``test_aoi``, GeoJSON or any vector). DN become TOA reflectance with the
per-band coefficients of the scene's Planet metadata XML when given, else ``DN * scale``. Ground truth is
a vector file (GeoJSON FeatureCollection or bare list of features, GPKG, Shapefile...) whose
``attribute`` values in ``crop_values`` are crop, or a class raster (``.tif``/``.img``/``.vrt``) whose
pixel values in ``crop_values`` are crop and in ``ignore_values`` are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError, InputFileError
from cropseg.planet_metadata import parse_metadata
from cropseg.raster import check_scene_raster
from cropseg.types import (
    DWR_CROP_CLASSES,
    RasterGroundTruth,
    Scene,
    SceneSet,
    VectorGroundTruth,
)
from cropseg.vector import read_aoi

RASTER_SUFFIXES = {".tif", ".tiff", ".img", ".vrt"}


def _path(value: Any, option: str) -> Path | None:
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    if not p.exists():
        raise InputFileError(f"{p}: file not found (source.{option})")
    return p


class LocalSource:
    synthetic = False

    def __init__(self, image: str | None = None, train_aoi: str | None = None, test_aoi: str | None = None,
                 train_image: str | None = None, test_image: str | None = None, metadata: str | None = None,
                 train_metadata: str | None = None, test_metadata: str | None = None, scale: float = 1e-4,
                 nodata: float | None = 0, bands: Sequence[int] = (1, 2, 3, 4), ground_truth: str | None = None,
                 train_ground_truth: str | None = None, test_ground_truth: str | None = None,
                 attribute: str = "CLASS1", crop_values: Sequence[Any] = DWR_CROP_CLASSES,
                 ignore_values: Sequence[int] = (), uncovered: str = "noncrop", layer: str | None = None,
                 udm: str | None = None, train_udm: str | None = None, test_udm: str | None = None):
        if uncovered not in ("noncrop", "ignore"):
            raise ConfigError(f"source.uncovered: 'noncrop' or 'ignore', got {uncovered!r}")
        if len(bands) != 4:
            raise ConfigError(f"source.bands: four band indexes (blue, green, red, NIR), got {list(bands)}")
        if scale <= 0:
            raise ConfigError(f"source.scale: must be positive, got {scale}")
        self.opts = dict(locals())
        self.opts.pop("self")

    def load(self, workdir: Path) -> SceneSet:
        o = self.opts
        if o["image"] and (o["train_image"] or o["test_image"]):
            raise ConfigError("source: give either image (+ train_aoi/test_aoi) or train_image/test_image, not both")
        if o["image"]:
            if not (o["train_aoi"] and o["test_aoi"]):
                raise ConfigError("source.image: needs both source.train_aoi and source.test_aoi")
            train = self._scene("train", "image", "train_aoi", "metadata", "udm")
            test = self._scene("test", "image", "test_aoi", "metadata", "udm")
        else:
            for opt in ("train_image", "test_image"):
                if not o[opt]:
                    raise ConfigError(f"source.{opt}: required (or set source.image with train/test AOIs)")
            train = self._scene("train", "train_image", "train_aoi", "train_metadata", "train_udm")
            test = self._scene("test", "test_image", "test_aoi", "test_metadata", "test_udm")
        return SceneSet(train=train, test=test, synthetic=False,
                        metadata={"train_scene_id": train.metadata.get("scene_id"),
                                  "test_scene_id": test.metadata.get("scene_id")})

    def _ground_truth(self, role: str):
        o = self.opts
        opt = f"{role}_ground_truth" if o[f"{role}_ground_truth"] else "ground_truth"
        path = _path(o[opt], opt)
        if path is None:
            raise ConfigError(f"source.ground_truth: required (a vector file or a class raster)")
        if path.suffix.lower() in RASTER_SUFFIXES:
            try:
                crop = tuple(int(v) for v in o["crop_values"])
            except (TypeError, ValueError):
                raise ConfigError(f"source.crop_values: a class raster needs integer values, got "
                                  f"{list(o['crop_values'])}") from None
            return RasterGroundTruth(path, crop, tuple(int(v) for v in o["ignore_values"]))
        return VectorGroundTruth(path, o["attribute"], tuple(str(v) for v in o["crop_values"]), o["layer"],
                                 o["uncovered"])

    def _scene(self, role: str, image_opt: str, aoi_opt: str, meta_opt: str, udm_opt: str) -> Scene:
        from rasterio.windows import from_bounds

        o = self.opts
        image = _path(o[image_opt], image_opt)
        grid = check_scene_raster(image)
        meta_path = _path(o[meta_opt], meta_opt)
        metadata: dict[str, Any] = {"image": str(image)}
        if meta_path is not None:
            meta = parse_metadata(meta_path)
            meta.gains(max(int(b) for b in o["bands"]))  # every selected band has a coefficient
            gains = tuple(meta.reflectance_coefficients[int(b)] for b in o["bands"])
            metadata.update(scene_id=meta.scene_id, acquired=meta.acquired.isoformat() if meta.acquired else None,
                            reflectance="toa_xml")
        else:
            gains = (float(o["scale"]),) * 4
            metadata.update(scene_id=image.stem, reflectance=f"scale={o['scale']}")
        window, aoi = None, None
        aoi_path = _path(o[aoi_opt], aoi_opt)
        if aoi_path is not None:
            import shapely

            aoi = read_aoi(aoi_path, grid.crs)
            west, south, east, north = grid.bounds
            clipped = aoi.intersection(shapely.box(west, south, east, north))
            if clipped.is_empty:
                raise InputFileError(f"{aoi_path}: the AOI does not overlap {image}")
            window = from_bounds(*clipped.bounds, transform=grid.transform).round_offsets().round_lengths()
            window = window.intersection(from_bounds(west, south, east, north, transform=grid.transform)
                                         .round_offsets().round_lengths())
            aoi = clipped
        return Scene(name=role, path=image, gains=gains, bands=tuple(int(b) for b in o["bands"]), window=window,
                     nodata=o["nodata"], aoi=aoi, usable_path=_path(o[udm_opt], udm_opt),
                     ground_truth=self._ground_truth(role), metadata=metadata)


@hookimpl
def cropseg_register_sources(register):
    register("local", LocalSource)
