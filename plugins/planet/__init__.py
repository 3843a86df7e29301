"""Source ``planet``: search, order and download PlanetScope scenes with the Planet SDK, then load them.

For the train and the test part separately: search the Data API over the part's AOI (dates, cloud cover,
further filters) or look up an explicit scene id, check the scene covers enough of the AOI, order it
through the Orders API (product bundle ``analytic_udm2`` by default, clipped to the AOI), wait, download
into the cache (``<cache_dir>/planet/...``) and verify every file against the order's manifest. A
second run with the same request reuses the verified files without ordering again. DN become TOA
reflectance with the metadata XML's coefficients (surface-reflectance bundles: x 1e-4); the udm2 clear
band is the valid-data mask; ground truth is read like the ``local`` source's.

The API key comes from ``PL_API_KEY`` or the SDK's auth file, never from the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError, SourceError
from cropseg.scenes import UNCOVERED, aoi_geometry, existing_path, make_ground_truth
from cropseg.types import DWR_CROP_CLASSES, SceneSet

from .search import (
    RULES,
    AoiCover,
    Candidate,
    build_filter,
    candidate,
    choose,
    describe_filter,
    parse_time,
    parse_windows,
    rank,
    table,
)

log = logging.getLogger("cropseg.planet")
ROLES = ("train", "test")
ROLE_KEYS = ("aoi", "scene_id", "ground_truth", "start", "end", "max_cloud_cover", "windows")
WGS84 = "EPSG:4326"


def _unset(value: Any) -> bool:
    return value is None or value == "" or value == "???"


class PlanetSource:
    synthetic = False

    def __init__(
        self,
        train: Mapping[str, Any],
        test: Mapping[str, Any],
        api_url: str | None = None,
        item_type: str = "PSScene",
        bundle: str = "analytic_udm2",
        fallback_bundles: Sequence[str] = (),
        start: Any = None,
        end: Any = None,
        windows: Sequence[str] | None = None,
        max_cloud_cover: float | None = 0.1,
        filters: Sequence[Mapping[str, Any]] = (),
        permission_filter: bool = True,
        std_quality: bool = True,
        require_asset: bool = True,
        select: str = "least_cloud",
        min_aoi_coverage: float = 0.5,
        max_candidates: int = 20,
        search_limit: int = 500,
        clip: bool = True,
        attribute: str = "CLASS1",
        crop_values: Sequence[Any] = DWR_CROP_CLASSES,
        ignore_values: Sequence[int] = (),
        uncovered: str = "noncrop",
        layer: str | None = None,
        bands: Sequence[int] | None = None,
        nodata: float | None = 0,
        use_udm2: bool = True,
        poll_seconds: float = 5.0,
        max_polls: int = 720,
        retries: int = 5,
        retry_backoff_max: float = 64.0,
        download_retries: int = 3,
        rate_limit: float = 10.0,
    ):
        self.roles: dict[str, dict[str, Any]] = {}
        for role, node in (("train", train), ("test", test)):
            if not isinstance(node, Mapping):
                raise ConfigError(f"source.{role}: a mapping with aoi, ground_truth and optionally scene_id")
            unknown = sorted(set(node) - set(ROLE_KEYS))
            if unknown:
                raise ConfigError(
                    f"source.{role}: unknown option(s) {', '.join(unknown)} (valid: {', '.join(ROLE_KEYS)})"
                )
            part = {k: (None if _unset(node.get(k)) else node.get(k)) for k in ROLE_KEYS}
            for k, default in (
                ("start", start),
                ("end", end),
                ("max_cloud_cover", max_cloud_cover),
                ("windows", windows),
            ):
                if part[k] is None:
                    part[k] = default
            wins = part["windows"]
            if wins is not None and not isinstance(wins, str) and len(wins) == 0:
                part["windows"] = wins = None
            if wins is not None:
                opt = "windows" if _unset(node.get("windows")) else f"{role}.windows"
                part["windows"] = parse_windows(wins if isinstance(wins, str) else list(wins), opt)
                if part["start"] is not None or part["end"] is not None:
                    raise ConfigError(
                        f"source.{opt} and source.start/end: the windows set the dates of a time stack; "
                        "leave start and end unset"
                    )
                if part["scene_id"] is not None:
                    raise ConfigError(
                        f"source.{role}.scene_id and source.{opt}: a window picks its scene by search; "
                        "give one or the other"
                    )
            part["start"] = parse_time(part["start"], f"{role}.start")
            part["end"] = parse_time(part["end"], f"{role}.end", end=True)
            if part["start"] and part["end"] and part["start"] > part["end"]:
                raise ConfigError(f"source.{role}: start {part['start']:%Y-%m-%d} is after end {part['end']:%Y-%m-%d}")
            mcc = part["max_cloud_cover"]
            if mcc is not None and not 0 <= float(mcc) <= 1:
                raise ConfigError(f"source.max_cloud_cover: a fraction in 0..1, got {mcc}")
            if part["scene_id"] is not None and not isinstance(part["scene_id"], str):
                raise ConfigError(
                    f"source.{role}.scene_id: got the number {part['scene_id']!r}; Hydra reads ids "
                    "like 20160831_180257_0e26 as numbers, so quote the id: "
                    f"\"source.{role}.scene_id='<id>'\""
                )
            self.roles[role] = part
        if select not in RULES:
            raise ConfigError(f"source.select: one of {', '.join(RULES)}, got {select!r}")
        if not 0 <= float(min_aoi_coverage) <= 1:
            raise ConfigError(f"source.min_aoi_coverage: a fraction in 0..1, got {min_aoi_coverage}")
        if uncovered not in UNCOVERED:
            raise ConfigError(f"source.uncovered: 'noncrop' or 'ignore', got {uncovered!r}")
        if bands is not None and len(bands) != 4:
            raise ConfigError(f"source.bands: four band indexes (blue, green, red, NIR) or null, got {list(bands)}")
        for name, val in (("retries", retries), ("download_retries", download_retries), ("max_polls", max_polls)):
            if int(val) < 0:
                raise ConfigError(f"source.{name}: must be >= 0, got {val}")
        for name, val in (
            ("poll_seconds", poll_seconds),
            ("retry_backoff_max", retry_backoff_max),
            ("rate_limit", rate_limit),
        ):
            if float(val) < 0:
                raise ConfigError(f"source.{name}: must be >= 0, got {val}")
        if not all(isinstance(f, Mapping) and f.get("type") for f in filters):
            raise ConfigError("source.filters: a list of Data API filter objects, each with a 'type'")
        self.api_url = api_url
        self.item_type, self.bundle, self.clip = str(item_type), str(bundle), bool(clip)
        self.fallback_bundles = [str(b) for b in fallback_bundles]
        self.filters = [dict(f) for f in filters]
        self.permission, self.std_quality = bool(permission_filter), bool(std_quality)
        self.require_asset = bool(require_asset)
        self.rule, self.min_coverage = select, float(min_aoi_coverage)
        self.max_candidates, self.search_limit = int(max_candidates), int(search_limit)
        self.gt_opts = dict(
            attribute=attribute,
            crop_values=list(crop_values),
            ignore_values=list(ignore_values),
            uncovered=uncovered,
            layer=layer,
        )
        self.bands = None if bands is None else [int(b) for b in bands]
        self.nodata, self.use_udm2 = nodata, bool(use_udm2)
        self.api_opts = dict(
            retries=retries,
            retry_backoff_max=retry_backoff_max,
            poll_seconds=poll_seconds,
            max_polls=max_polls,
            rate_limit=rate_limit,
        )
        self.download_retries = int(download_retries)
        self._aois: dict[str, Any] = {}

    # -- search ----------------------------------------------------------------------------------------
    def api(self) -> Any:
        from .client import PlanetAPI

        return PlanetAPI(self.api_url, **self.api_opts)

    def aoi(self, role: str) -> Any:
        """The role's AOI as a shapely geometry in EPSG:4326 (read once)."""
        if role not in self._aois:
            if self.roles[role]["aoi"] is None:
                raise ConfigError(f"source.{role}.aoi: required (a GeoJSON file or an inline GeoJSON geometry)")
            self._aois[role] = aoi_geometry(self.roles[role]["aoi"], WGS84, option=f"{role}.aoi")
        return self._aois[role]

    def search(self, api: Any, role: str, window: tuple[Any, Any] | None = None) -> tuple[list[Candidate], str]:
        """Every scene matching the role's filters (within ``window`` = (start, end) when given), best first
        by the selection rule (``best_usable`` within a window), and the filters as text."""
        from shapely.geometry import mapping

        from .client import bundle_assets, primary_asset

        part, aoi = dict(self.roles[role]), self.aoi(role)
        if window is not None:
            part["start"], part["end"] = window
        asset = primary_asset(bundle_assets(self.item_type, self.bundle)) if self.require_asset else None
        assets = [asset] if asset else []
        flt = build_filter(
            mapping(aoi),
            start=part["start"],
            end=part["end"],
            max_cloud_cover=part["max_cloud_cover"],
            assets=assets,
            permission=self.permission,
            std_quality=self.std_quality,
            extra=self.filters,
        )
        text = describe_filter(
            part["start"], part["end"], part["max_cloud_cover"], assets, self.permission, self.std_quality, self.filters
        )
        items = api.search(self.item_type, flt, limit=self.search_limit)
        cover = AoiCover(aoi)
        return rank([candidate(cover, it) for it in items], "best_usable" if window else self.rule), text

    def window_choices(self, api: Any, role: str) -> list[tuple[str, list[Candidate], str, Candidate | None]]:
        """Per time window of the role: its text, the matching scenes (best usable first), the filters as
        text and the chosen scene (``None`` when none covers ``min_aoi_coverage`` of the AOI)."""
        out = []
        for w0, w1, label in self.roles[role]["windows"]:
            cands, text = self.search(api, role, (w0, w1))
            ok = [c for c in cands if c.coverage >= self.min_coverage]
            out.append((label, cands, text, ok[0] if ok else None))
        return out

    def pick_windows(self, api: Any, role: str) -> list[Candidate]:
        """One scene per time window of the role: the one with the most usable AOI (AOI coverage x clear
        fraction); a window with no usable scene is refused, naming it, before anything is ordered."""
        chosen, missing = [], []
        for i, (label, cands, text, best) in enumerate(self.window_choices(api, role)):
            if best is None:
                if cands:
                    top = max(cands, key=lambda c: c.coverage)
                    why = (
                        f"{len(cands)} scene(s) match but none covers {self.min_coverage:.0%} of the AOI "
                        f"(best: {top.id}, {top.coverage:.0%})"
                    )
                else:
                    why = f"no scene matches ({text})"
                missing.append(f"window {i} {label}: {why}")
                continue
            log.info(
                "%s window %s: %d scenes match (* = most usable):\n%s",
                role,
                label,
                len(cands),
                table(cands, best.id, self.max_candidates),
            )
            chosen.append(best)
        if missing:
            raise SourceError(
                f"source.windows: no usable Planet scene over the {role} AOI in {'; '.join(missing)}; widen "
                "or drop the window, or relax source.max_cloud_cover / source.min_aoi_coverage"
            )
        return chosen

    def pick(self, api: Any, role: str) -> Candidate:
        """The role's scene: the explicit ``scene_id`` (checked against the AOI) or the best search match."""
        part, what = self.roles[role], f"the {role} AOI"
        if part["scene_id"]:
            from .client import bundle_assets

            bundle_assets(self.item_type, self.bundle)  # an unknown bundle fails before any request
            item = api.get_item(self.item_type, part["scene_id"])
            if item is None:
                raise SourceError(
                    f"source.{role}.scene_id: no {self.item_type} scene {part['scene_id']!r} in the Planet catalog"
                )
            cand = candidate(AoiCover(self.aoi(role)), item)
            log.info("%s scene %s (given):\n%s", role, cand.id, table([cand], cand.id))
            if cand.coverage < self.min_coverage:
                raise SourceError(
                    f"source.{role}.scene_id: scene {cand.id} covers only {cand.coverage:.0%} of "
                    f"{what} (source.min_aoi_coverage={self.min_coverage:.0%}); pick a scene over the "
                    "AOI"
                )
            return cand
        cands, text = self.search(api, role)
        log.info("%s: %d Planet %s scenes match (%s)", role, len(cands), self.item_type, text)
        chosen = choose(cands, self.rule, self.min_coverage, text, what)
        log.info("%s candidates (* = chosen by %s):\n%s", role, self.rule, table(cands, chosen.id, self.max_candidates))
        return chosen

    # -- order, download, load ----------------------------------------------------------------------------
    def fetch(self, api: Any, role: str, cand: Candidate, workdir: Path) -> Any:
        from planet import order_request
        from shapely.geometry import mapping

        from .cache import SceneCache
        from .order import fetch

        clip = mapping(self.aoi(role)) if self.clip else None
        try:
            product = order_request.product(
                [cand.id], self.bundle, self.item_type, fallback_bundle=self.fallback_bundles or None
            )
            tools = [order_request.clip_tool(clip)] if clip else None
        except Exception as exc:  # planet.specs.SpecificationException / ClientError: bad bundle or AOI
            raise ConfigError(f"source.bundle / source.fallback_bundles / source.{role}.aoi: {exc}") from None
        request = order_request.build_request(f"cropseg {role} {cand.id}", products=[product], tools=tools)
        cache = SceneCache(workdir, self.item_type, cand.id, product["product_bundle"], clip)
        return fetch(
            api, cache, request, what=f"{role} scene {cand.id} ({self.bundle})", download_retries=self.download_retries
        )

    def fetch_stack(self, api: Any, role: str, cands: Sequence[Candidate], workdir: Path) -> Any:
        """The scenes of a role's time windows in ONE order (clipped to the AOI, with the bundle's udm2),
        cached under one folder keyed by the scene ids."""
        import hashlib

        from planet import order_request
        from shapely.geometry import mapping

        from .cache import SceneCache
        from .order import fetch

        ids = [c.id for c in cands]
        clip = mapping(self.aoi(role)) if self.clip else None
        try:
            product = order_request.product(
                ids, self.bundle, self.item_type, fallback_bundle=self.fallback_bundles or None
            )
            tools = [order_request.clip_tool(clip)] if clip else None
        except Exception as exc:  # planet.specs.SpecificationException / ClientError: bad bundle or AOI
            raise ConfigError(f"source.bundle / source.fallback_bundles / source.{role}.aoi: {exc}") from None
        name = f"cropseg {role} {len(ids)} dates {ids[0]}..{ids[-1]}"
        request = order_request.build_request(name, products=[product], tools=tools)
        key = "stack-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:12]
        cache = SceneCache(workdir, self.item_type, key, product["product_bundle"], clip)
        what = f"{role} time stack of {len(ids)} scenes ({', '.join(ids)}; {self.bundle})"
        return fetch(api, cache, request, what=what, download_retries=self.download_retries)

    def ground_truth_kinds(self) -> dict[str, str]:
        """``{option: "vector" | "raster"}`` of each role's ground truth, before anything is fetched."""
        from cropseg.plugins import ground_truth_kind_of

        return {
            f"source.{r}.ground_truth ({self.roles[r]['ground_truth']})": ground_truth_kind_of(
                self.roles[r]["ground_truth"]
            )
            for r in ROLES
            if self.roles[r].get("ground_truth")
        }

    def load(self, workdir: Path) -> SceneSet:
        from shapely.geometry import mapping

        from .product import make_scene, make_stack

        for role in ROLES:  # local files first: a typo fails before any request
            self.aoi(role)
        gts = {}
        for role in ROLES:
            path = existing_path(self.roles[role]["ground_truth"], f"{role}.ground_truth")
            if path is None:
                raise ConfigError(f"source.{role}.ground_truth: required (a vector file or a class raster)")
            gts[role] = make_ground_truth(path, option=f"{role}.ground_truth", **self.gt_opts)
        api = self.api()
        meta: dict[str, Any] = {"item_type": self.item_type, "bundle": self.bundle, "api_url": api.api_url}
        scenes, synthetic = {}, False
        # every role's scenes (one per window of a time stack) chosen before anything is ordered
        picks: dict[str, list[Candidate]] = {
            role: self.pick_windows(api, role) if self.roles[role]["windows"] else [self.pick(api, role)]
            for role in ROLES
        }
        for role, cands in picks.items():
            stack = bool(self.roles[role]["windows"])
            if stack:
                delivery = self.fetch_stack(api, role, cands, Path(workdir))
            else:
                delivery = self.fetch(api, role, cands[0], Path(workdir))
            cand = cands[0]
            info = {
                "scene_id": cand.id,
                "acquired": cand.acquired or None,
                "cloud_cover": cand.cloud_cover,
                "aoi_coverage": round(cand.coverage, 4),
                "item_type": self.item_type,
                "bundle": delivery.bundle or self.bundle,
                "order_id": delivery.order_id,
                "from_cache": delivery.from_cache,
            }
            if stack:
                info["scene_ids"] = ",".join(c.id for c in cands)
                info["windows"] = ",".join(w[2] for w in self.roles[role]["windows"])
            if any(c.synthetic for c in cands):
                info["synthetic"] = True
            opts: dict[str, Any] = dict(
                aoi_geojson=mapping(self.aoi(role)),
                bands=self.bands,
                nodata=self.nodata,
                use_udm2=self.use_udm2,
                ground_truth=gts[role],
                metadata=info,
            )
            if stack:
                from cropseg.scenes import check_stack_coverage

                scenes[role] = make_stack(role, delivery, {c.id: c.acquired for c in cands}, **opts)
                check_stack_coverage(scenes[role])
            else:
                scenes[role] = make_scene(role, delivery, **opts)
            synthetic |= any(c.synthetic for c in cands)
            meta.update(
                {
                    f"{role}_scene_id": cand.id,
                    f"{role}_acquired": cand.acquired or None,
                    f"{role}_order_id": delivery.order_id,
                }
            )
            if stack:
                meta[f"{role}_scene_ids"] = info["scene_ids"]
        return SceneSet(train=scenes["train"], test=scenes["test"], synthetic=synthetic, metadata=meta)


@hookimpl
def cropseg_register_sources(register):
    register("planet", PlanetSource)
