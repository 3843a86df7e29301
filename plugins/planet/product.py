"""Turn a delivered PSScene order (analytic or surface-reflectance image, metadata XML, udm2) into a
file-backed :class:`~cropseg.types.Scene`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropseg.errors import RasterFormatError, SourceError
from cropseg.raster import open_raster
from cropseg.scenes import aoi_geometry, build_scene, toa_gains
from cropseg.types import GroundTruth, Scene

from .order import Delivery

#: surface reflectance products hold reflectance x 10000
SR_SCALE = 1e-4
_IMAGE = re.compile(r"_Analytic(MS)?(_SR)?(_8b)?(_SR)?(_clip)?\.tiff?$", re.IGNORECASE)
_XML = re.compile(r"_metadata(_clip)?\.xml$", re.IGNORECASE)
_UDM2 = re.compile(r"_udm2(_clip)?\.tiff?$", re.IGNORECASE)
#: blue, green, red, NIR in 4-band and 8-band PlanetScope products
DEFAULT_BANDS = {4: (1, 2, 3, 4), 8: (2, 4, 6, 8)}


@dataclass(frozen=True)
class ProductFiles:
    image: Path
    metadata_xml: Path | None
    udm2: Path | None
    surface_reflectance: bool


def product_files(delivery: Delivery) -> ProductFiles:
    """Find the image, metadata XML and udm2 among the delivered files (by the manifest's
    ``planet/asset_type`` annotation, else by Planet's file names)."""
    image = xml = udm = None
    sr = False
    for e in delivery.entries:
        path = delivery.cache.path(e)
        asset = e.asset_type
        name = path.name
        if asset.endswith("_xml") or (not asset and _XML.search(name)):
            xml = path
        elif "udm2" in asset or (not asset and _UDM2.search(name)):
            udm = path
        elif (asset.startswith(("ortho_analytic", "basic_analytic")) and not asset.endswith("_rpc")) or (
            not asset and _IMAGE.search(name)
        ):
            image = path
            sr = asset.endswith("_sr") or "_SR" in name
    if image is None:
        names = ", ".join(e.path for e in delivery.entries)
        raise SourceError(f"Planet order {delivery.order_id}: no analytic image among the delivered files ({names})")
    return ProductFiles(image, xml, udm, sr)


def make_scene(
    role: str,
    delivery: Delivery,
    *,
    aoi_geojson: Mapping[str, Any],
    bands: Sequence[int] | None,
    nodata: float | None,
    use_udm2: bool,
    ground_truth: GroundTruth,
    metadata: Mapping[str, Any],
) -> Scene:
    """The role's scene: DN -> TOA reflectance from the XML coefficients (surface reflectance: x 1e-4),
    the udm2 clear band as usable-data mask, restricted to the AOI."""
    files = product_files(delivery)
    with open_raster(files.image, what="Planet scene") as src:
        count, crs, grid = src.count, src.crs, (src.transform, src.width, src.height)
    if bands is None:
        if count not in DEFAULT_BANDS:
            raise RasterFormatError(
                f"{files.image}: {count} bands; set source.bands to the blue, green, red, NIR band indexes"
            )
        bands = DEFAULT_BANDS[count]
    meta: dict[str, Any] = {**metadata, "image": str(files.image)}
    if files.surface_reflectance:
        gains: tuple[float, ...] = (SR_SCALE,) * len(bands)
        meta["reflectance"] = f"surface_reflectance_scale={SR_SCALE}"
    elif files.metadata_xml is not None:
        gains, prov = toa_gains(files.metadata_xml, bands)
        meta["reflectance"] = prov["reflectance"]
        for k in ("scene_id", "acquired"):
            meta.setdefault(k, prov[k])
    else:
        raise SourceError(
            f"Planet order {delivery.order_id}: no metadata XML delivered with {files.image.name}, "
            "so DN cannot become TOA reflectance; order a bundle with the *_xml asset"
        )
    usable = files.udm2 if use_udm2 else None
    if usable is not None:
        with open_raster(usable, what="udm2") as src:
            if (src.transform, src.width, src.height) != grid or src.crs != crs:
                raise RasterFormatError(f"{usable}: the udm2 is not on the grid of {files.image.name}")
    aoi = aoi_geometry(dict(aoi_geojson), crs, option=f"{role}.aoi")
    return build_scene(
        role,
        files.image,
        gains=gains,
        bands=bands,
        nodata=nodata,
        aoi=aoi,
        aoi_what=f"source.{role}.aoi",
        usable=usable,
        usable_band=1,
        ground_truth=ground_truth,
        metadata=meta,
        expected_bands=max(bands),
    )
