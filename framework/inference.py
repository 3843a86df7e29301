"""The trained inference pipeline as one object: DN -> reflectance settings, features, the fitted
classifier and the postprocessors, saved as a JSON spec plus the pickled classifier and rebuilt from the
plugin registry (features and postprocessors by name and options).

This module knows nothing of MLflow: :mod:`cropseg.tracking.model` wraps it as an MLflow pyfunc model,
and ``cropseg predict`` (:mod:`cropseg.predict`) runs it on new scenes, block by block.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, CRSMismatchError, InputFileError, ModelInputError, PluginError, RasterFormatError
from .featurize import feature_halo
from .plugins import Registry, get_plugin_manager
from .raster import DEFAULT_BLOCK, atomic_path, iter_windows, open_raster
from .types import BAND_NAMES, Classifier, Features, Grid, MaskFilter, PatchModel, Scene, Vectorizer, VectorResult

log = logging.getLogger("cropseg")

SPEC_FILE = "pipeline.json"
CLASSIFIER_FILE = "classifier.pkl"
SPEC_VERSION = 1


@dataclass(frozen=True)
class PipelineSpec:
    """Everything but the fitted classifier needed to apply a trained run to a new scene.

    ``reflectance``: ``{"mode": "toa_xml"}`` (per-band ``reflectanceCoefficient`` of the new scene's Planet
    metadata XML), ``{"mode": "scale", "scale": s}`` (``DN * s``) or ``{"mode": "gains", "gains": [...]}``,
    plus ``offsets``. ``bands`` are the file band indexes of one date's bands, ``roles`` their roles
    (:mod:`cropseg.spectral`: ``blue``... ``swir1``, ``ndvi``), ``band_names`` the roles of every band the
    model reads (``<role>@<date>`` for a stack; the columns of the served model's rows); ``band_count`` and
    ``crs_units`` describe the scenes the model was trained on (new scenes must match). ``dates``: the
    training scene's dates when it was a time stack (a new scene must be a stack of as many dates; pixel
    rows for the served model then hold ``band_names``, i.e. every band of date 1, then date 2..., with
    all bands 0 on a date that is a gap).
    ``features``/``labeler`` are ``{"name", "options"}``; ``filters``/``vectorizers`` lists of them.
    """

    features: dict[str, Any]
    classifier: str
    filters: list[dict[str, Any]]
    vectorizers: list[dict[str, Any]]
    reflectance: dict[str, Any]
    bands: list[int]
    band_names: list[str]
    band_count: int
    nodata: float | None
    crs_units: str
    pixel_size: float
    feature_names: list[str]
    labeler: dict[str, Any] | None = None
    fit_params: dict[str, Any] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)
    synthetic: bool = False
    source_run_id: str | None = None
    dates: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=lambda: list(BAND_NAMES))
    cropseg_version: str = ""
    spec_version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineSpec:
        if int(data.get("spec_version", 0)) > SPEC_VERSION:
            raise ConfigError(
                f"pipeline spec version {data.get('spec_version')} is newer than this cropseg "
                f"understands ({SPEC_VERSION}); upgrade cropseg"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def crs_units(crs: Any) -> str:
    """The unit of a CRS's first axis (``metre``, ``degree``, ``US survey foot``...)."""
    from pyproj import CRS as PyCRS

    try:
        c = PyCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    except Exception:  # noqa: BLE001 - pyproj raises several types for odd CRSs
        return "unknown"
    return c.axis_info[0].unit_name if c.axis_info else "unknown"


def reflectance_settings(scene: Scene) -> dict[str, Any]:
    """How ``scene`` turned DN into reflectance, in a form a new scene can repeat."""
    how = str(scene.metadata.get("reflectance") or "")
    offsets = [float(o) for o in scene.offsets]
    if how == "toa_xml":
        return {"mode": "toa_xml", "offsets": offsets}
    if how.startswith("scale="):
        return {"mode": "scale", "scale": float(how.split("=", 1)[1]), "offsets": offsets}
    if len(set(scene.gains)) == 1:
        return {"mode": "scale", "scale": float(scene.gains[0]), "offsets": offsets}
    return {"mode": "gains", "gains": [float(g) for g in scene.gains], "offsets": offsets}


def pipeline_spec(
    cfg: Any,
    stages: Any,
    scene: Scene,
    *,
    fit_params: Mapping[str, Any] | None = None,
    synthetic: bool = False,
    run_id: str | None = None,
) -> PipelineSpec:
    """The spec of a trained run: ``stages`` as built by :func:`cropseg.pipeline.build_stages` from ``cfg``,
    ``scene`` the training scene (its reflectance settings, bands and grid)."""
    from . import __version__
    from .config import plugin_options, postprocessor_nodes

    post = [{"name": name, "options": plugin_options(node)} for name, node in postprocessor_nodes(cfg)]
    n_filters = len(stages.filters)
    feats_node = cfg.get("features")
    lab_node = cfg.get("labeler")
    with open_raster(scene.path, what="scene") as src:
        band_count = int(src.count)
    plugins = {}
    for stage, names in stages.names.items():
        for n in names.split(","):
            info = stages.registry.stages.get(stage, {}).get(n)
            if info is not None:
                plugins[f"{stage}.{n}"] = info.origin
    return PipelineSpec(
        features={
            "name": stages.names.get("features", "bands"),
            "options": plugin_options(feats_node) if feats_node else {},
        },
        classifier=stages.names["classifier"],
        filters=post[:n_filters],
        vectorizers=post[n_filters:],
        reflectance=reflectance_settings(scene),
        bands=[int(b) for b in scene.bands],
        band_names=list(scene.band_names),
        band_count=band_count,
        nodata=None if scene.nodata is None else float(scene.nodata),
        crs_units=crs_units(scene.grid.crs),
        pixel_size=float(abs(scene.grid.transform.a)),
        feature_names=list(stages.features.names(scene.band_names)),
        labeler={"name": stages.names["labeler"], "options": plugin_options(lab_node)} if lab_node else None,
        fit_params={k: v for k, v in (fit_params or {}).items()},
        plugins=plugins,
        synthetic=bool(synthetic),
        source_run_id=run_id,
        dates=list(scene.dates),
        roles=list(scene.base_band_names),
        cropseg_version=__version__,
    )


class InferencePipeline:
    """A trained pipeline: apply it to pixel rows (:meth:`predict_rows`) or to a scene file, block by
    block (:meth:`scene` then :meth:`predict_scene` and :meth:`vectorize`)."""

    def __init__(
        self,
        spec: PipelineSpec,
        classifier: Classifier | PatchModel,
        features: Features,
        filters: Sequence[tuple[str, MaskFilter]],
        vectorizers: Sequence[tuple[str, Vectorizer]],
        registry: Registry | None = None,
    ):
        self.spec = spec
        self.classifier = classifier
        self.features = features
        self.filters = list(filters)
        self.vectorizers = list(vectorizers)
        self.registry = registry

    # -- building, saving, loading -------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls, spec: PipelineSpec, classifier: Classifier | PatchModel, registry: Registry | None = None
    ) -> InferencePipeline:
        """Rebuild features and postprocessors from their plugin names and options (the plugins must be
        installed)."""
        registry = registry or Registry.from_plugin_manager(get_plugin_manager())
        features = registry.create("features", spec.features["name"], spec.features.get("options", {}))
        filters: list[tuple[str, MaskFilter]] = []
        vectorizers: list[tuple[str, Vectorizer]] = []
        todo: list[tuple[dict[str, Any], type, list[Any]]] = [(f, MaskFilter, filters) for f in spec.filters]
        todo += [(v, Vectorizer, vectorizers) for v in spec.vectorizers]
        for item, kind, out in todo:
            obj = registry.create("postprocessor", item["name"], item.get("options", {}))
            if not isinstance(obj, kind):
                raise PluginError(f"postprocessor {item['name']!r} is no longer a {kind.__name__}")
            out.append((item["name"], obj))
        if not isinstance(classifier, (Classifier, PatchModel)):
            raise PluginError(
                f"the saved classifier {spec.classifier!r} does not implement cropseg.types.Classifier or PatchModel"
            )
        return cls(spec, classifier, features, filters, vectorizers, registry)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``pipeline.json`` and ``classifier.pkl`` into ``directory``; returns their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        spec_path, clf_path = directory / SPEC_FILE, directory / CLASSIFIER_FILE
        with atomic_path(spec_path) as tmp:
            tmp.write_text(json.dumps(self.spec.to_dict(), indent=2, default=str))
        with atomic_path(clf_path) as tmp, open(tmp, "wb") as fh:
            pickle.dump(self.classifier, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return spec_path, clf_path

    @classmethod
    def load(cls, spec_path: Path, classifier_path: Path, registry: Registry | None = None) -> InferencePipeline:
        spec = PipelineSpec.from_dict(json.loads(Path(spec_path).read_text()))
        with open(classifier_path, "rb") as fh:
            classifier = pickle.load(fh)  # noqa: S301 - a model this project logged itself
        return cls.from_spec(spec, classifier, registry)

    # -- pixel rows ------------------------------------------------------------------------------------
    @property
    def accepts_pixel_rows(self) -> bool:
        """False when the features look at neighbourhoods (a ``halo``): pixel rows carry no neighbours."""
        return feature_halo(self.features) == 0

    def predict_rows(self, reflectance: np.ndarray) -> np.ndarray:
        """Classes (0 non-crop, 1 crop) of pixel rows ``(n, bands)`` of reflectance in ``band_names``
        order, computed in float32 exactly as for scene blocks."""
        X = np.asarray(reflectance, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.spec.band_names):
            raise ModelInputError(
                f"pixel rows: expected shape (n, {len(self.spec.band_names)}) with columns "
                f"{', '.join(self.spec.band_names)}, got {X.shape}"
            )
        if not np.isfinite(X).all():
            raise ModelInputError("pixel rows: reflectance values must be finite numbers")
        if not self.accepts_pixel_rows:
            raise ModelInputError(
                f"pixel rows: this model's features ({self.spec.features.get('name')!r}) are spatial (statistics "
                f"over up to {feature_halo(self.features)} pixels around each pixel), so single pixel rows cannot "
                "be classified; classify a scene with `cropseg predict` instead"
            )
        if len(X) == 0:
            return np.zeros(0, dtype=np.int64)
        feats = self.features.compute(np.ascontiguousarray(X.T)[:, :, None], tuple(self.spec.band_names))
        F = np.ascontiguousarray(np.asarray(feats)[:, :, 0].T)
        rows = getattr(self.classifier, "predict_rows", None)
        if isinstance(self.classifier, PatchModel) and callable(rows):  # a per-pixel patch model (tempcnn)
            return np.asarray(rows(F)).astype(np.int64)
        if isinstance(self.classifier, PatchModel):  # no neighbourhood: each row as a uniform field
            from .patches import predict_uniform_rows

            return predict_uniform_rows(self.classifier, F).astype(np.int64)
        return np.asarray(self.classifier.predict(F)).astype(np.int64)

    # -- scenes ----------------------------------------------------------------------------------------
    def check_stack_length(self, n_images: int, first: Path | str) -> None:
        """One line when ``n_images`` images do not fit the model: a model trained on a time stack of T
        dates takes T images (in time order), a single-date model one."""
        want = len(self.spec.dates) if len(self.spec.dates) >= 2 else 1
        if n_images == want:
            return
        if want == 1:
            raise ModelInputError(
                f"{first}: the model was trained on single images; give one image, got a stack of {n_images}"
            )
        raise ModelInputError(
            f"{first}: the model was trained on a time stack of {want} dates ({', '.join(self.spec.dates)}); "
            f"give {want} images of one place, one per date in time order, got {n_images}"
        )

    def check_bands(self, bands: Sequence[str], image: Path | str) -> tuple[str, ...]:
        """The roles ``bands`` of a new scene's file bands (in order), checked against the model's: one
        :class:`ModelInputError` saying which bands the model expects when one is missing."""
        from .spectral import check_roles

        given = check_roles(bands, "--bands")
        missing = [r for r in self.spec.roles if r not in given]
        if missing:
            raise ModelInputError(
                f"{image}: the model expects the bands {', '.join(self.spec.roles)}; --bands names "
                f"{', '.join(given)}, without {missing[0]}"
            )
        return given

    def stack_scene(
        self,
        images: Sequence[Path | str],
        *,
        metadata: Sequence[Path | str | None] | None = None,
        udm: Sequence[Path | str | None] | None = None,
        dates: Sequence[str] | None = None,
        date_pattern: str | None = None,
        scale: float | None = None,
        aoi: Path | str | None = None,
        nodata: float | None = None,
        name: str | None = None,
        ground_truth: Any = None,
        bands: Sequence[str] | None = None,
    ) -> Scene:
        """A time-stack :class:`Scene` of ``images`` (one per date, in time order) for a model trained on
        a stack of as many dates; each date checked as :meth:`scene` checks one image (band count, CRS
        units, reflectance), the stack as :func:`cropseg.scenes.build_stack` does. Dates: ``dates``,
        else each date's metadata XML, else the file name (``date_pattern``)."""
        from .scenes import DATE_PATTERN, build_stack, date_from_name, parse_date
        from .types import Acquisition

        self.check_stack_length(len(images), images[0])
        n = len(images)
        for opt, values in (("--metadata", metadata), ("--udm", udm), ("--dates", dates)):
            if values is not None and len(values) != n:
                raise ModelInputError(f"{opt}: one per image ({n} images), got {len(values)}")
        metas = list(metadata) if metadata is not None else [None] * n
        udms = list(udm) if udm is not None else [None] * n
        acqs = []
        first: Scene | None = None
        for i, img in enumerate(images):
            sc = self._image_scene(
                img,
                metadata=metas[i],
                scale=scale,
                aoi=aoi if i == 0 else None,
                udm=udms[i],
                nodata=nodata,
                bands=bands,
            )
            first = first or sc
            if dates is not None:
                when = parse_date(dates[i], "dates")
            elif sc.metadata.get("acquired"):
                when = parse_date(sc.metadata["acquired"], "metadata")
            else:
                found = date_from_name(sc.path, date_pattern or DATE_PATTERN, "image")
                if found is None:
                    raise ModelInputError(f"{sc.path}: no date (give --dates, --metadata or a dated file name)")
                when = found
            acqs.append(
                Acquisition(
                    date=when,
                    path=sc.path,
                    gains=sc.gains,
                    offsets=sc.offsets,
                    bands=sc.bands,
                    nodata=sc.nodata,
                    usable_path=sc.usable_path,
                    metadata=dict(sc.metadata),
                )
            )
        assert first is not None
        return build_stack(
            name or first.name,
            acqs,
            ground_truth=ground_truth,
            metadata=dict(first.metadata),
            option="dates",
            aoi=first.aoi,
            roles=first.roles,
        )

    def scene(
        self,
        image: Path | str,
        *,
        metadata: Path | str | None = None,
        scale: float | None = None,
        aoi: Path | str | None = None,
        udm: Path | str | None = None,
        nodata: float | None = None,
        name: str | None = None,
        ground_truth: Any = None,
        bands: Sequence[str] | None = None,
    ) -> Scene:
        """A :class:`Scene` for one new GeoTIFF (see :meth:`_image_scene`); a model trained on a time stack
        refuses it in one line (:meth:`stack_scene` takes stacks)."""
        self.check_stack_length(1, image)
        return self._image_scene(
            image,
            metadata=metadata,
            scale=scale,
            aoi=aoi,
            udm=udm,
            nodata=nodata,
            name=name,
            ground_truth=ground_truth,
            bands=bands,
        )

    def _image_scene(
        self,
        image: Path | str,
        *,
        metadata: Path | str | None = None,
        scale: float | None = None,
        aoi: Path | str | None = None,
        udm: Path | str | None = None,
        nodata: float | None = None,
        name: str | None = None,
        ground_truth: Any = None,
        bands: Sequence[str] | None = None,
    ) -> Scene:
        """A :class:`Scene` for a new GeoTIFF, read as the model expects: same band count and CRS units as
        the training scenes, DN -> reflectance as in training (the scene's metadata XML or a scale; an
        explicit ``metadata`` or ``scale`` overrides), optionally cropped to an AOI. ``bands`` names the
        roles of the file's bands in order (default: the training scene's layout): the model's bands are
        taken from it by role; a scene without one of them is refused in one line."""
        from .planet_metadata import parse_metadata

        spec = self.spec
        roles = tuple(spec.roles)
        image = Path(image).expanduser()
        with open_raster(image, what="scene") as src:
            count, crs, transform = src.count, src.crs, src.transform
            synthetic = str(src.tags().get("SYNTHETIC", "")).lower() == "true"
            grid = Grid(src.crs, src.transform, src.width, src.height)
        file_bands = tuple(int(b) for b in spec.bands)
        if bands is not None:
            given = self.check_bands(bands, image)
            if count != len(given):
                raise RasterFormatError(f"{image}: --bands names {len(given)} bands, the scene has {count}")
            file_bands = tuple(given.index(r) + 1 for r in roles)
        elif count != spec.band_count:
            per_date = f"{len(spec.bands)} per date, " if spec.dates else ""
            raise RasterFormatError(
                f"{image}: the model expects {spec.band_count} bands "
                f"({per_date}{', '.join(spec.band_names[: len(spec.bands)] if spec.dates else spec.band_names)}), "
                f"the scene has {count}"
            )
        if crs is None or transform.is_identity:
            raise RasterFormatError(f"{image}: the raster has no georeferencing (CRS and transform)")
        units = crs_units(crs)
        if units != spec.crs_units:
            raise CRSMismatchError(
                f"{image}: CRS {crs.to_string()} has units of {units!r}; the model was trained "
                f"on scenes in {spec.crs_units!r} (reproject the scene first)"
            )
        if abs(abs(transform.a) - spec.pixel_size) > 0.25 * spec.pixel_size:
            log.warning(
                "%s: pixel size %.3g %s differs from the training scenes' %.3g",
                image,
                abs(transform.a),
                units,
                spec.pixel_size,
            )
        gains, how = self._gains(image, metadata, scale, file_bands)
        offsets = tuple(float(o) for o in spec.reflectance.get("offsets", [0.0] * len(spec.bands)))
        window, geom = None, None
        if aoi is not None:
            window, geom = _aoi_window(Path(aoi).expanduser(), image, grid)
        meta_info: dict[str, Any] = {"image": str(image), "reflectance": how, "synthetic": synthetic}
        if metadata is not None:
            meta = parse_metadata(metadata)
            meta_info.update(scene_id=meta.scene_id, acquired=meta.acquired.isoformat() if meta.acquired else None)
        else:
            meta_info["scene_id"] = image.stem
        udm_path = Path(udm).expanduser() if udm is not None else None
        if udm_path is not None and not udm_path.exists():
            raise InputFileError(f"{udm_path}: usable-data raster not found")
        return Scene(
            name=name or image.stem,
            path=image,
            gains=gains,
            offsets=offsets,
            bands=file_bands,
            window=window,
            nodata=spec.nodata if nodata is None else nodata,
            aoi=geom,
            usable_path=udm_path,
            ground_truth=ground_truth,
            metadata=meta_info,
            roles=roles,
        )

    def _gains(
        self, image: Path, metadata: Path | str | None, scale: float | None, file_bands: Sequence[int]
    ) -> tuple[tuple[float, ...], str]:
        from .planet_metadata import parse_metadata

        refl = self.spec.reflectance
        if scale is not None:
            if scale <= 0:
                raise ConfigError(f"scale: must be positive, got {scale}")
            if refl["mode"] != "scale" or float(refl.get("scale", 0)) != float(scale):
                log.warning("reflectance from scale %s, not as in training (%s)", scale, _describe(refl))
            return (float(scale),) * len(self.spec.bands), f"scale={scale}"
        if metadata is not None:
            meta = parse_metadata(metadata)
            from .spectral import PLANET_XML_ROLES

            other = [r for r in self.spec.roles if r not in PLANET_XML_ROLES]
            if other:
                raise ConfigError(
                    f"--metadata: a Planet metadata XML has reflectance coefficients for PlanetScope bands only, "
                    f"not for the model's {other[0]} band; give --scale"
                )
            meta.gains(max(file_bands))
            if refl["mode"] != "toa_xml":
                log.warning("reflectance from %s, not as in training (%s)", metadata, _describe(refl))
            return tuple(meta.reflectance_coefficients[b] for b in file_bands), "toa_xml"
        if refl["mode"] == "toa_xml":
            raise ConfigError(
                f"{image}: the model converts DN to TOA reflectance with the scene's Planet metadata "
                "XML; give its metadata XML (--metadata) or a scale (--scale)"
            )
        if refl["mode"] == "scale":
            return (float(refl["scale"]),) * len(self.spec.bands), f"scale={refl['scale']}"
        return tuple(float(g) for g in refl["gains"]), "gains"

    def predict_scene(
        self, scene: Scene, out_path: Path, *, block: int = DEFAULT_BLOCK, raw_path: Path | None = None
    ) -> Path:
        """Classify ``scene`` block by block and apply the mask filters: a uint8 GeoTIFF on the scene's
        grid (0 non-crop, 1 crop, 255 nodata). The unfiltered mask goes to ``raw_path`` when given."""
        from .scene_ops import apply_filters, predict_scene

        out_path = Path(out_path)
        keep_raw = raw_path is not None
        raw = Path(raw_path) if raw_path is not None else out_path.with_name(f".{out_path.stem}.raw.tif")
        try:
            predict_scene(scene, self.features, self.classifier, raw, block)
            apply_filters(raw, self.filters, out_path, block)
        finally:
            if not keep_raw:
                raw.unlink(missing_ok=True)
        return out_path

    def vectorize(self, mask_path: Path, out_path: Path) -> VectorResult | None:
        """Run the model's vectorizers on a mask (the last one's result), or None without vectorizers."""
        res = None
        for _, vec in self.vectorizers:
            res = vec.vectorize(Path(mask_path), Path(out_path))
        return res

    def example_rows(self, scene: Scene, n: int = 5, block: int = DEFAULT_BLOCK) -> np.ndarray:
        """Up to ``n`` valid pixel rows of reflectance from ``scene`` (for the model's input example)."""
        grid = scene.grid
        found: list[np.ndarray] = []
        with scene.reader() as reader:
            for w in iter_windows(grid.height, grid.width, block):
                blk = reader.read(w)
                if blk.valid.sum() >= n:
                    rows = blk.reflectance[:, blk.valid].T
                    idx = np.linspace(0, len(rows) - 1, n).astype(int)
                    return np.ascontiguousarray(rows[idx], dtype=np.float32)
                if blk.valid.any():  # a sparse scene: gather its few valid pixels across blocks
                    found.append(blk.reflectance[:, blk.valid].T)
                    if sum(len(f) for f in found) >= n:
                        return np.ascontiguousarray(np.concatenate(found)[:n], dtype=np.float32)
        raise ModelInputError(f"{scene.path}: fewer than {n} valid pixels for an input example")


def _describe(refl: Mapping[str, Any]) -> str:
    if refl["mode"] == "scale":
        return f"DN x {refl['scale']}"
    if refl["mode"] == "toa_xml":
        return "the scene's metadata XML"
    return f"gains {refl.get('gains')}"


def _aoi_window(aoi_path: Path, image: Path, grid: Grid) -> tuple[Any, Any]:
    """The window of ``grid`` covering the AOI and the AOI clipped to the scene (as the sources do)."""
    from .scenes import aoi_window
    from .vector import read_aoi

    if not aoi_path.exists():
        raise InputFileError(f"{aoi_path}: AOI file not found")
    return aoi_window(grid, read_aoi(aoi_path, grid.crs), image=image, what=aoi_path)


__all__ = ["BAND_NAMES", "InferencePipeline", "PipelineSpec", "crs_units", "pipeline_spec", "reflectance_settings"]
