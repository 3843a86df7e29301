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

from .cache import ManifestEntry
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


def product_files(delivery: Delivery, entries: Sequence[ManifestEntry] | None = None) -> ProductFiles:
    """Find the image, metadata XML and udm2 among the delivered files (by the manifest's
    ``planet/asset_type`` annotation, else by Planet's file names); ``entries``: one scene's of them."""
    image = xml = udm = None
    sr = False
    for e in delivery.entries if entries is None else entries:
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


def files_by_item(delivery: Delivery, item_ids: Sequence[str]) -> dict[str, ProductFiles]:
    """The files of each scene of a several-scene order, by the manifest's ``planet/item_id`` annotation
    (else the file name, which Planet starts with the item id); a scene the order lacks is refused."""
    groups: dict[str, list[ManifestEntry]] = {i: [] for i in item_ids}
    for e in delivery.entries:
        item = str(e.annotations.get("planet/item_id") or "")
        if not item:
            name = Path(e.path).name
            item = next((i for i in item_ids if name.startswith(f"{i}_")), "")
        if item in groups:
            groups[item].append(e)
    lacking = [i for i, entries in groups.items() if not entries]
    if lacking:
        raise SourceError(
            f"Planet order {delivery.order_id}: no files of scene(s) {', '.join(lacking)} among the delivered files"
        )
    return {i: product_files(delivery, entries) for i, entries in groups.items()}


def _gains(files: ProductFiles, bands: Sequence[int], order_id: str | None) -> tuple[tuple[float, ...], dict[str, Any]]:
    """DN -> reflectance gains of ``bands`` and provenance (``reflectance``, and from the XML ``scene_id``,
    ``acquired``)."""
    if files.surface_reflectance:
        return (SR_SCALE,) * len(bands), {"reflectance": f"surface_reflectance_scale={SR_SCALE}"}
    if files.metadata_xml is not None:
        return toa_gains(files.metadata_xml, bands)
    raise SourceError(
        f"Planet order {order_id}: no metadata XML delivered with {files.image.name}, "
        "so DN cannot become TOA reflectance; order a bundle with the *_xml asset"
    )


def _bands_and_grid(
    files: ProductFiles, bands: Sequence[int] | None, use_udm2: bool
) -> tuple[Sequence[int], Any, Path | None]:
    """The band indexes (Planet's defaults by band count), the image CRS, and the udm2 to use (checked to
    be on the image's grid)."""
    with open_raster(files.image, what="Planet scene") as src:
        count, crs, grid = src.count, src.crs, (src.transform, src.width, src.height)
    if bands is None:
        if count not in DEFAULT_BANDS:
            raise RasterFormatError(
                f"{files.image}: {count} bands; set source.bands to the blue, green, red, NIR band indexes"
            )
        bands = DEFAULT_BANDS[count]
    usable = files.udm2 if use_udm2 else None
    if usable is not None:
        with open_raster(usable, what="udm2") as src:
            if (src.transform, src.width, src.height) != grid or src.crs != crs:
                raise RasterFormatError(f"{usable}: the udm2 is not on the grid of {files.image.name}")
    return bands, crs, usable


def make_stack(
    role: str,
    delivery: Delivery,
    acquired: Mapping[str, str],
    *,
    aoi_geojson: Mapping[str, Any],
    bands: Sequence[int] | None,
    nodata: float | None,
    use_udm2: bool,
    ground_truth: GroundTruth,
    metadata: Mapping[str, Any],
) -> Scene:
    """The role's time stack from one order of several scenes (``acquired``: the catalog's acquisition
    time by scene id, one scene per time window): each date's DN -> reflectance like :func:`make_scene`,
    its date from the metadata XML's acquisition time (else the catalog's), its udm2 clear band as its
    valid mask; dates on another grid are read warped onto the first date's."""
    from cropseg.planet_metadata import parse_metadata
    from cropseg.scenes import build_stack, parse_date
    from cropseg.types import Acquisition

    acqs = []
    first_crs = None
    for item, files in files_by_item(delivery, list(acquired)).items():
        idx, crs, usable = _bands_and_grid(files, bands, use_udm2)
        first_crs = first_crs or crs
        gains, prov = _gains(files, idx, delivery.order_id)
        when = acquired[item]
        if files.metadata_xml is not None:
            xml = parse_metadata(files.metadata_xml)
            when = xml.acquired.isoformat() if xml.acquired else when
        meta = {"scene_id": item, "acquired": when, "image": str(files.image), "reflectance": prov["reflectance"]}
        acqs.append(
            Acquisition(
                date=parse_date(when, f"{role}.windows"),
                path=files.image,
                gains=tuple(float(g) for g in gains),
                offsets=(0.0,) * len(idx),
                bands=tuple(int(b) for b in idx),
                nodata=nodata,
                usable_path=usable,
                metadata=meta,
            )
        )
    aoi = aoi_geometry(dict(aoi_geojson), first_crs, option=f"{role}.aoi")
    return build_stack(
        role,
        acqs,
        ground_truth=ground_truth,
        metadata={**metadata, "image": str(acqs[0].path), "reflectance": acqs[0].metadata["reflectance"]},
        option=f"{role}.windows",
        aoi=aoi,
        aoi_what=f"source.{role}.aoi",
    )


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
    bands, crs, usable = _bands_and_grid(files, bands, use_udm2)
    gains, prov = _gains(files, bands, delivery.order_id)
    meta: dict[str, Any] = {**metadata, "image": str(files.image), "reflectance": prov["reflectance"]}
    for k in ("scene_id", "acquired"):
        if k in prov:
            meta.setdefault(k, prov[k])
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
