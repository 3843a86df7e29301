"""Source ``local``: scenes from GeoTIFFs on disk (PlanetScope's four bands, or any bands named by role).

Train and test come either from two files (``train_image`` / ``test_image``) or from one file cut by two
AOIs (``image`` + ``train_aoi`` / ``test_aoi``, GeoJSON or any vector). DN become TOA reflectance with the
per-band coefficients of the scene's Planet metadata XML when given, else ``DN * scale``. Ground truth is
a vector file (GeoJSON FeatureCollection or bare list of features, GPKG, Shapefile...) whose
``attribute`` values in ``crop_values`` are crop, or a class raster (``.tif``/``.img``/``.vrt``) whose
pixel values in ``crop_values`` are crop and in ``ignore_values`` are ignored.

**Time stacks.** An image option given a list of files (``train_image=[may.tif, jul.tif, sep.tif]``) makes
that scene a stack of dates (:func:`cropseg.scenes.build_stack`): metadata XMLs and usable-data rasters
are then lists of the same length (one per date, or none). One stacked GeoTIFF holding the dates' bands
one date after the other is read with ``bands_per_date`` (``bands`` then index within each date). Dates:
``train_dates`` / ``test_dates`` / ``dates`` when given, else each date's metadata XML (``acquired``),
else the file name by ``date_pattern``; they must be in time order without repeats. Dates on another grid
than the first are warped onto it (``resampling``).

**Bands.** ``bands`` is either four file band indexes of PlanetScope's blue, green, red, NIR (the
default ``[1, 2, 3, 4]``), or the roles of the file's bands in order (``[blue, green, red, nir, swir1,
swir2]``: the file holds exactly those bands; per date with ``bands_per_date``), ``null`` for a band left
out (a Sentinel-2 L2A stack of 12 bands: ``[coastal, blue, green, red, red_edge, red_edge2, red_edge3,
nir, nir_narrow, null, swir1, swir2]``, B9 water vapour left out); roles in :mod:`cropseg.spectral`,
indices stored as bands (``ndvi``) included. A Planet metadata XML converts PlanetScope bands only (its coefficients are per
PlanetScope band): bands with other roles (SWIR, NDVI...) are refused with one; they use
``DN * scale + offset`` (``scale: 1`` for data already in reflectance or an index, ``1e-4`` for
Sentinel-2 L2A DN before processing baseline 04.00, ``2.75e-5`` and ``offset: -0.2`` for Landsat
Collection 2 Level-2 surface reflectance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.raster import check_scene_raster, open_raster
from cropseg.scenes import (
    DATE_PATTERN,
    UNCOVERED,
    aoi_geometry,
    build_scene,
    build_stack,
    check_ground_truth,
    check_stack_coverage,
    date_from_name,
    existing_path,
    make_ground_truth,
    parse_date,
    toa_gains,
)
from cropseg.spectral import PLANET_XML_ROLES, parse_band_roles
from cropseg.types import DWR_CROP_CLASSES, Acquisition, Scene, SceneSet

Paths = str | list[str] | None


class LocalSource:
    synthetic = False

    def __init__(
        self,
        image: Paths = None,
        train_aoi: str | None = None,
        test_aoi: str | None = None,
        train_image: Paths = None,
        test_image: Paths = None,
        metadata: Paths = None,
        train_metadata: Paths = None,
        test_metadata: Paths = None,
        scale: float = 1e-4,
        nodata: float | None = 0,
        bands: Any = (1, 2, 3, 4),
        ground_truth: str | None = None,
        train_ground_truth: str | None = None,
        test_ground_truth: str | None = None,
        attribute: str = "CLASS1",
        crop_values: Sequence[Any] = DWR_CROP_CLASSES,
        ignore_values: Sequence[int] = (),
        uncovered: str = "noncrop",
        layer: str | None = None,
        udm: Paths = None,
        train_udm: Paths = None,
        test_udm: Paths = None,
        dates: list[str] | None = None,
        train_dates: list[str] | None = None,
        test_dates: list[str] | None = None,
        bands_per_date: int | None = None,
        date_pattern: str | None = None,
        resampling: str = "nearest",
        offset: float = 0.0,
    ):
        if uncovered not in UNCOVERED:
            raise ConfigError(f"source.uncovered: 'noncrop' or 'ignore', got {uncovered!r}")
        #: file band indexes, their roles, and the file's band count when bands are named by role
        self.band_indexes, self.roles, self.band_count = parse_band_roles(bands)
        if scale <= 0:
            raise ConfigError(f"source.scale: must be positive, got {scale}")
        other = [r for r in self.roles if r not in PLANET_XML_ROLES]
        for opt, value in (
            ("metadata", metadata),
            ("train_metadata", train_metadata),
            ("test_metadata", test_metadata),
        ):
            if value not in (None, "", []) and other:
                raise ConfigError(
                    f"source.{opt}: a Planet metadata XML has reflectance coefficients for PlanetScope bands only, "
                    f"not for the {other[0]} band (source.bands); leave it out and set source.scale (and "
                    "source.offset): 1 for data already in reflectance, 1e-4 for Sentinel-2 L2A DN"
                )
        self.opts = dict(locals())
        self.opts.pop("self")

    def band_roles(self) -> tuple[str, ...]:
        """The roles of one date's bands (known from the options, before any file is opened)."""
        return self.roles

    def _file_bands(self, path: Path, per_date: int | None = None) -> list[int]:
        """The file band indexes of one date; when ``bands`` names the file's bands by role, the file (or
        each date of a stacked file) must hold exactly as many bands as it names."""
        if self.band_count is None:
            return list(self.band_indexes)
        if per_date is None:
            with open_raster(path, what="scene") as src:
                count = src.count
            what = f"{path} has {count} bands"
        else:
            count, what = per_date, f"source.bands_per_date={per_date}"
        n = self.band_count
        if count != n:
            raise ConfigError(
                f"source.bands: {n} bands named ({', '.join(r or 'null' for r in self.opts['bands'])}) but "
                f"{what}; name every band of the file in order (null for one left out)"
            )
        return list(self.band_indexes)

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
            train = self._scene("train", "image", "train_aoi", "metadata", "udm", "dates")
            test = self._scene("test", "image", "test_aoi", "metadata", "udm", "dates")
        else:
            for opt in ("train_image", "test_image"):
                if not o[opt]:
                    raise ConfigError(f"source.{opt}: required (or set source.image with train/test AOIs)")
            train = self._scene("train", "train_image", "train_aoi", "train_metadata", "train_udm", "train_dates")
            test = self._scene("test", "test_image", "test_aoi", "test_metadata", "test_udm", "test_dates")
        if train.n_dates != test.n_dates:
            raise ConfigError(
                f"source: the train scene has {train.n_dates} date(s), the test scene {test.n_dates}; a model "
                "trained on one stack length cannot classify another"
            )
        return SceneSet(
            train=train,
            test=test,
            synthetic=False,
            metadata={"train_scene_id": train.metadata.get("scene_id"), "test_scene_id": test.metadata.get("scene_id")},
        )

    def check(self, workdir: Path) -> None:
        """Cheap checks before a run starts: the files exist and open, band counts, CRS, grids of the
        usable-data rasters, the ground truth overlapping each scene; for time stacks also the dates and
        a decimated read of each date's valid mask (a date with no valid pixel is refused)."""
        scenes = self.load(workdir)
        for scene in (scenes.train, scenes.test):
            check_ground_truth(scene)
            check_stack_coverage(scene)

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

    def _scene(self, role: str, image_opt: str, aoi_opt: str, meta_opt: str, udm_opt: str, dates_opt: str) -> Scene:
        o = self.opts
        images = o[image_opt]
        if isinstance(images, list | tuple) or o["bands_per_date"] is not None:
            return self._stack(role, image_opt, aoi_opt, meta_opt, udm_opt, dates_opt)
        for opt in (meta_opt, udm_opt):
            if isinstance(o[opt], list | tuple):
                raise ConfigError(f"source.{opt}: a list (one per date) needs a list of images in source.{image_opt}")
        image = existing_path(images, image_opt)
        assert image is not None
        bands = self._file_bands(image)
        grid = check_scene_raster(image, bands=len(bands), indexes=bands)
        meta_path = existing_path(o[meta_opt], meta_opt)
        metadata: dict[str, Any] = {"image": str(image)}
        offsets = (0.0,) * len(bands)
        if meta_path is not None:
            gains, prov = toa_gains(meta_path, bands)
            metadata.update(prov)
        else:
            gains = (float(o["scale"]),) * len(bands)
            offsets = (float(o["offset"]),) * len(bands)
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
            expected_bands=len(bands),
            roles=self.roles,
            offsets=offsets,
        )

    def _per_date(self, opt: str, n: int) -> list[Any]:
        """``source.<opt>`` as one value per date: a list of ``n``, or unset (``None`` for every date)."""
        value = self.opts[opt]
        if value in (None, ""):
            return [None] * n
        if not isinstance(value, list | tuple) or len(value) != n:
            raise ConfigError(f"source.{opt}: one per date ({n} dates), got {value!r}")
        return list(value)

    def _stack(self, role: str, image_opt: str, aoi_opt: str, meta_opt: str, udm_opt: str, dates_opt: str) -> Scene:
        o = self.opts
        images = o[image_opt]
        if o["bands_per_date"] is not None:
            # one stacked GeoTIFF: date t's bands are bands + t * bands_per_date
            bpd = int(o["bands_per_date"])
            if isinstance(images, list | tuple):
                raise ConfigError(f"source.bands_per_date: one stacked GeoTIFF in source.{image_opt}, got a list")
            path = existing_path(images, image_opt)
            assert path is not None
            bands = self._file_bands(path, bpd)
            if bpd < max(bands):
                raise ConfigError(f"source.bands_per_date={bpd}: smaller than the largest of source.bands {bands}")
            with open_raster(path, what="stacked scene") as src:
                count = src.count
            if count % bpd:
                raise ConfigError(f"source.bands_per_date={bpd}: {path} has {count} bands, not a whole number of dates")
            n = count // bpd
            files = [path] * n
            band_sets = [[b + t * bpd for b in bands] for t in range(n)]
            if not o[dates_opt]:
                raise ConfigError(f"source.{dates_opt}: a stacked GeoTIFF needs its dates ({n} dates in {path})")
        else:
            n = len(images)
            files = [existing_path(p, image_opt) for p in images]  # type: ignore[misc]
            assert files[0] is not None
            bands = self._file_bands(files[0])
            band_sets = [bands] * n
        metas = [existing_path(m, meta_opt) for m in self._per_date(meta_opt, n)]
        udms = [existing_path(u, udm_opt) for u in self._per_date(udm_opt, n)]
        given = self._per_date(dates_opt, n)
        acqs = []
        for path, idx, meta_path, udm, date in zip(files, band_sets, metas, udms, given):
            assert path is not None
            metadata: dict[str, Any] = {"image": str(path)}
            offsets = (0.0,) * len(idx)
            if meta_path is not None:
                gains, prov = toa_gains(meta_path, idx)
                metadata.update(prov)
            else:
                gains = (float(o["scale"]),) * len(idx)
                offsets = (float(o["offset"]),) * len(idx)
                metadata.update(scene_id=path.stem, reflectance=f"scale={o['scale']}")
            if date is not None:
                iso = parse_date(date, dates_opt)
            elif metadata.get("acquired"):
                iso = parse_date(metadata["acquired"], meta_opt)
            else:
                found = date_from_name(path, o["date_pattern"] or DATE_PATTERN, image_opt)
                if found is None:
                    raise ConfigError(
                        f"{path}: no date (give source.{dates_opt}, a Planet metadata XML in source.{meta_opt}, "
                        "or a file name matching source.date_pattern)"
                    )
                iso = found
            if meta_path is None and o["bands_per_date"] is not None:
                metadata["scene_id"] = f"{path.stem}@{iso}"
            acqs.append(
                Acquisition(
                    date=iso,
                    path=path,
                    gains=tuple(float(g) for g in gains),
                    offsets=offsets,
                    bands=tuple(idx),
                    nodata=o["nodata"],
                    usable_path=udm,
                    metadata=metadata,
                )
            )
        grid = check_scene_raster(acqs[0].path, bands=len(bands), indexes=acqs[0].bands)
        aoi = aoi_geometry(o[aoi_opt], grid.crs, option=aoi_opt) if o[aoi_opt] else None
        first = acqs[0].metadata
        return build_stack(
            role,
            acqs,
            ground_truth=self._ground_truth(role),
            metadata={**first, "scene_id": first.get("scene_id")},
            option=dates_opt if any(d is not None for d in given) else image_opt,
            aoi=aoi,
            aoi_what=existing_path(o[aoi_opt], aoi_opt) if aoi is not None else None,
            resampling=o["resampling"],
            roles=self.roles,
        )


@hookimpl
def cropseg_register_sources(register):
    register("local", LocalSource)
