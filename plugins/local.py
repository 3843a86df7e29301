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
from cropseg.errors import ConfigError
from cropseg.raster import check_scene_raster
from cropseg.scenes import (
    UNCOVERED,
    aoi_geometry,
    build_scene,
    check_ground_truth,
    existing_path,
    make_ground_truth,
    toa_gains,
)
from cropseg.types import DWR_CROP_CLASSES, Scene, SceneSet


class LocalSource:
    synthetic = False

    def __init__(
        self,
        image: str | None = None,
        train_aoi: str | None = None,
        test_aoi: str | None = None,
        train_image: str | None = None,
        test_image: str | None = None,
        metadata: str | None = None,
        train_metadata: str | None = None,
        test_metadata: str | None = None,
        scale: float = 1e-4,
        nodata: float | None = 0,
        bands: Sequence[int] = (1, 2, 3, 4),
        ground_truth: str | None = None,
        train_ground_truth: str | None = None,
        test_ground_truth: str | None = None,
        attribute: str = "CLASS1",
        crop_values: Sequence[Any] = DWR_CROP_CLASSES,
        ignore_values: Sequence[int] = (),
        uncovered: str = "noncrop",
        layer: str | None = None,
        udm: str | None = None,
        train_udm: str | None = None,
        test_udm: str | None = None,
    ):
        if uncovered not in UNCOVERED:
            raise ConfigError(f"source.uncovered: 'noncrop' or 'ignore', got {uncovered!r}")
        if len(bands) != 4:
            raise ConfigError(f"source.bands: four band indexes (blue, green, red, NIR), got {list(bands)}")
        if scale <= 0:
            raise ConfigError(f"source.scale: must be positive, got {scale}")
        self.opts = dict(locals())
        self.opts.pop("self")

    def ground_truth_kinds(self) -> dict[str, str]:
        """``{option: "vector" | "raster"}`` for each ground truth this source will read, known before any
        scene is loaded (the pipeline checks that the labeler can read them)."""
        from cropseg.plugins import ground_truth_kind_of

        o = self.opts
        out = {}
        for role in ("train", "test"):
            opt = f"{role}_ground_truth" if o[f"{role}_ground_truth"] else "ground_truth"
            if o[opt]:
                out[f"source.{opt} ({o[opt]})"] = ground_truth_kind_of(o[opt])
        return out

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
        return SceneSet(
            train=train,
            test=test,
            synthetic=False,
            metadata={"train_scene_id": train.metadata.get("scene_id"), "test_scene_id": test.metadata.get("scene_id")},
        )

    def check(self, workdir: Path) -> None:
        """Cheap checks before a run starts (no pixel is read): the files exist and open, band counts,
        CRS, grids of the usable-data rasters, and the ground truth overlapping each scene."""
        scenes = self.load(workdir)
        for scene in (scenes.train, scenes.test):
            check_ground_truth(scene)

    def _ground_truth(self, role: str):
        o = self.opts
        opt = f"{role}_ground_truth" if o[f"{role}_ground_truth"] else "ground_truth"
        path = existing_path(o[opt], opt)
        if path is None:
            raise ConfigError("source.ground_truth: required (a vector file or a class raster)")
        return make_ground_truth(
            path,
            attribute=o["attribute"],
            crop_values=o["crop_values"],
            ignore_values=o["ignore_values"],
            uncovered=o["uncovered"],
            layer=o["layer"],
            option=opt,
        )

    def _scene(self, role: str, image_opt: str, aoi_opt: str, meta_opt: str, udm_opt: str) -> Scene:
        o = self.opts
        bands = [int(b) for b in o["bands"]]
        image = existing_path(o[image_opt], image_opt)
        grid = check_scene_raster(image, indexes=bands)
        meta_path = existing_path(o[meta_opt], meta_opt)
        metadata: dict[str, Any] = {"image": str(image)}
        if meta_path is not None:
            gains, prov = toa_gains(meta_path, bands)
            metadata.update(prov)
        else:
            gains = (float(o["scale"]),) * 4
            metadata.update(scene_id=image.stem, reflectance=f"scale={o['scale']}")
        aoi = aoi_geometry(o[aoi_opt], grid.crs, option=aoi_opt) if o[aoi_opt] else None
        return build_scene(
            role,
            image,
            gains=gains,
            bands=bands,
            nodata=o["nodata"],
            aoi=aoi,
            aoi_what=existing_path(o[aoi_opt], aoi_opt) if aoi is not None else None,
            usable=existing_path(o[udm_opt], udm_opt),
            ground_truth=self._ground_truth(role),
            metadata=metadata,
        )


@hookimpl
def cropseg_register_sources(register):
    register("local", LocalSource)
