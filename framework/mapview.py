"""An interactive, self-contained HTML map of a run (folium / Leaflet): the scene as an RGB overlay (a time
stack: one overlay per date, named by the date), ground truth and predicted segments (with ``area_ha``) as
toggleable layers.

Leaflet 1.9.4 (BSD-2-Clause, ``framework/static/leaflet-1.9.4``) is inlined, so the map opens from the
MLflow UI's artifact view or a file with no network; only the optional OpenStreetMap base layer needs one.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .types import CROP, Scene, VectorGroundTruth

LEAFLET = "leaflet-1.9.4"
_JS_MARK = "cropseg-inline://leaflet.js"
_CSS_MARK = "cropseg-inline://leaflet.css"


def _static(name: str) -> str:
    return resources.files("cropseg").joinpath("static", LEAFLET, name).read_text(encoding="utf-8")


def _rgb_4326(scene: Scene, rgb: np.ndarray) -> tuple[np.ndarray, list[list[float]]]:
    """A true-colour composite of the scene warped to EPSG:4326 as RGBA (transparent outside the data)."""
    from rasterio.transform import from_bounds, xy
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    grid = scene.grid
    h, w = rgb.shape[:2]
    west, south, east, north = grid.bounds
    src_transform = from_bounds(west, south, east, north, w, h)
    dst_transform, dw, dh = calculate_default_transform(grid.crs, "EPSG:4326", w, h, west, south, east, north)
    alpha = np.where((rgb == 255).all(axis=2), 0, 255).astype(np.uint8)
    src = np.concatenate([rgb.transpose(2, 0, 1), alpha[None]], axis=0)
    dst = np.zeros((4, dh, dw), dtype=np.uint8)
    for b in range(4):
        reproject(
            src[b],
            dst[b],
            src_transform=src_transform,
            src_crs=grid.crs,
            dst_transform=dst_transform,
            dst_crs="EPSG:4326",
            resampling=Resampling.nearest,
        )
    (lon0, lon1), (lat1, lat0) = xy(dst_transform, [0, dh], [0, dw], offset="ul")  # top-left, bottom-right
    return dst.transpose(1, 2, 0), [[float(lat0), float(lon0)], [float(lat1), float(lon1)]]


def _for_display(gdf, grid, max_side: int):
    """``gdf`` (in the scene CRS) simplified to the map's resolution, one display pixel being the scene's
    longer side over ``max_side`` scene pixels, with polygons smaller than a display pixel dropped: the HTML
    (and the memory to build it) then stays bounded as scenes grow, like the PNG previews. Scenes that fit in
    ``max_side`` are drawn as they are."""
    factor = max(grid.width, grid.height) / max_side
    if factor <= 1 or gdf.empty:
        return gdf
    tol = factor * float(np.sqrt(grid.pixel_area))
    gdf = gdf[gdf.geometry.area >= tol * tol]
    return gdf.set_geometry(gdf.geometry.simplify(tol, preserve_topology=True))


def _truth_layer(scene: Scene, labels: Path, max_side: int):
    """Crop polygons of the ground truth in EPSG:4326: the survey's own polygons when vector, else traced
    from the (decimated) label raster."""
    import geopandas as gpd

    if isinstance(scene.ground_truth, VectorGroundTruth):
        from .vector import ground_truth_for_grid

        gdf = ground_truth_for_grid(scene.ground_truth, scene.grid)
        return _for_display(gdf[gdf["crop"]].drop(columns="crop"), scene.grid, max_side).to_crs("EPSG:4326")
    import rasterio
    import shapely
    from rasterio.features import shapes

    from .raster import decimated_read

    with rasterio.open(labels) as src:
        lab = decimated_read(src, max_side)
        t = src.transform @ src.transform.scale(src.width / lab.shape[1], src.height / lab.shape[0])
        crs = src.crs
    crop = lab == CROP
    geoms = [shapely.geometry.shape(g) for g, _ in shapes(crop.astype(np.uint8), mask=crop, transform=t)]
    return gpd.GeoDataFrame(geometry=geoms, crs=crs).to_crs("EPSG:4326")


def write_map(
    scene: Scene, labels: Path, segments: Path | None, out_path: Path, max_side: int = 1024, title: str = ""
) -> Path:
    """Write a self-contained HTML map for the test scene of a run."""
    import folium
    import geopandas as gpd

    from .previews import date_composites

    m = folium.Map(tiles=None, control_scale=True)
    m.default_js = [("leaflet", _JS_MARK)]
    m.default_css = [("leaflet_css", _CSS_MARK)]
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap (online)", show=False, overlay=False).add_to(m)
    synthetic = " [SYNTHETIC]" if scene.metadata.get("synthetic") else ""
    bounds: list[list[float]] = []
    # one layer per date of a time stack, named by its date (the first shown; tick another to compare)
    for t, (day, rgb) in enumerate(date_composites(scene, max_side)):
        img, bounds = _rgb_4326(scene, rgb)
        name = f"scene RGB {day}{synthetic}" if scene.acquisitions else f"scene RGB{synthetic}"
        folium.raster_layers.ImageOverlay(
            img, bounds=bounds, name=name, mercator_project=True, pixelated=True, show=t == 0
        ).add_to(m)
    truth = _truth_layer(scene, labels, max_side)
    tooltip_fields = [c for c in ("CLASS1", "LABEL") if c in truth.columns]
    folium.GeoJson(
        truth[[*tooltip_fields, "geometry"]],
        name="ground truth (crop)",
        style_function=lambda _: {"color": "#f2c80f", "weight": 1.5, "fillOpacity": 0.0},
        tooltip=folium.GeoJsonTooltip(fields=tooltip_fields) if tooltip_fields else None,
    ).add_to(m)
    if segments is not None and Path(segments).is_file():
        seg = gpd.read_file(segments)
        if len(seg):
            seg = _for_display(seg.to_crs(scene.grid.crs), scene.grid, max_side).to_crs("EPSG:4326")
        if len(seg):
            folium.GeoJson(
                seg,
                name="predicted crop segments",
                style_function=lambda _: {"color": "#2e8b3a", "weight": 1, "fillColor": "#2e8b3a", "fillOpacity": 0.35},
                tooltip=folium.GeoJsonTooltip(fields=["id", "area_ha"], aliases=["segment", "area (ha)"]),
            ).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds(bounds)
    if title:
        m.get_root().html.add_child(  # type: ignore[attr-defined]  # the root is a Figure
            folium.Element(
                f'<div style="position:fixed;top:8px;left:50px;z-index:1000;background:white;padding:2px 6px;'
                f'font:13px sans-serif">{title}{synthetic}</div>'
            )
        )
    html = m.get_root().render()
    html = html.replace(f'<script src="{_JS_MARK}"></script>', f"<script>{_static('leaflet.js')}</script>")
    html = html.replace(f'<link rel="stylesheet" href="{_CSS_MARK}"/>', f"<style>{_static('leaflet.css')}</style>")
    if _JS_MARK in html or _CSS_MARK in html:
        raise RuntimeError("folium's page template changed: Leaflet could not be inlined")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(html, encoding="utf-8")
    return out_path
