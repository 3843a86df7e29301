"""A Planet API double for tests: a real HTTP server on 127.0.0.1 speaking the parts of the Data and
Orders APIs that the ``planet`` SDK uses, serving SYNTHETIC scenes.

* ``POST /data/v1/quick-search`` (filters evaluated: And/Or/Not, Geometry, DateRange, Range, StringIn,
  NumberIn, Asset, Permission), pages followed through ``_links._next``; ``GET /data/v1/item-types/<type>/
  items/<id>``.
* ``POST /compute/ops/orders/v2`` (bundle checked against the spec, clip tool applied with rasterio);
  ``GET /compute/ops/orders/v2/<id>`` moves queued -> running -> success (or an injected failed/partial);
  results list every file plus ``manifest.json`` with md5/sha256; ``GET /download/<order>/<path>``.
* ``GET /compute/ops/bundles/spec``.
* Injectable faults: HTTP statuses queued per endpoint (401, 403, 429, 500, 503...), order outcomes,
  downloads cut off midway or corrupted. Counters of searches, orders and downloads per file.

Scenes come from cropseg's synthetic generator (``generate_scene``) with an 8-band udm2 written from the
nodata footprint (plus a cloud patch). Every item says ``"synthetic": true`` in its properties.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import rasterio
import shapely
import shapely.affinity
from shapely import wkt as shapely_wkt

from cropseg.planet_metadata import parse_metadata
from cropseg_plugins.sample.synth import generate_scene

ITEM_TYPE = "PSScene"
BUNDLE_ASSETS = {
    "analytic_udm2": ["ortho_analytic_4b", "ortho_analytic_4b_xml", "ortho_udm2"],
    "analytic_sr_udm2": ["ortho_analytic_4b_sr", "ortho_analytic_4b_xml", "ortho_udm2"],
}
SPEC = {"bundles": {name: {"name": name, "assets": {ITEM_TYPE: assets}} for name, assets in BUNDLE_ASSETS.items()}}
#: rows, cols of the cloud patch every scene's udm2 marks as not clear (cloud band 6)
CLOUD = (slice(110, 126), slice(120, 150))


@dataclass
class DoubleScene:
    """A synthetic PSScene item: its Data API record and asset files."""

    id: str
    acquired: datetime
    cloud_cover: float
    assets: dict[str, Path]
    ground_truth: Path
    footprint: dict
    left: float
    top: float
    #: the catalog's clear-sky percentage (udm2-derived ``clear_percent``); None: not in the item
    clear_percent: float | None = None

    def item(self, base: str) -> dict:
        return {
            "type": "Feature",
            "id": self.id,
            "geometry": self.footprint,
            "properties": {
                "acquired": self.acquired.isoformat().replace("+00:00", "Z"),
                "cloud_cover": self.cloud_cover,
                "item_type": ITEM_TYPE,
                "quality_category": "standard",
                "instrument": "PS2",
                "published": self.acquired.isoformat(),
                "synthetic": True,
                **({} if self.clear_percent is None else {"clear_percent": self.clear_percent}),
            },
            "assets": list(self.assets),
            "_permissions": [f"assets.{a}:download" for a in self.assets],
            "_links": {"_self": f"{base}/data/v1/item-types/{ITEM_TYPE}/items/{self.id}"},
        }


def make_scene(
    directory: Path,
    scene_id: str,
    seed: int,
    left: float,
    top: float,
    acquired: datetime,
    cloud_cover: float,
    size: int = 256,
) -> DoubleScene:
    """Generate a synthetic scene, its surface-reflectance variant and an 8-band udm2."""
    s = generate_scene(
        directory, scene_id=scene_id, seed=seed, width=size, height=size, left=left, top=top, acquired=acquired
    )
    meta = parse_metadata(s.metadata_xml)
    with rasterio.open(s.analytic) as src:
        dn = src.read()
        profile = src.profile
    valid = dn[0] > 0
    clear = valid.copy()
    clear[CLOUD] = False
    udm = np.zeros((8,) + valid.shape, dtype=np.uint8)
    udm[0] = clear
    udm[5] = valid & ~clear
    udm[6] = np.where(valid, 85, 0)
    udm[7] = ~valid  # udm1-style blackfill bit
    udm_path = directory / f"{scene_id}_3B_udm2.tif"
    with rasterio.open(udm_path, "w", **{**profile, "count": 8, "dtype": "uint8", "nodata": None}) as dst:
        dst.write(udm)
    sr = np.round(dn * np.asarray(meta.gains(4))[:, None, None] * 10000).astype(np.uint16)
    sr[:, ~valid] = 0
    sr_path = directory / f"{scene_id}_3B_AnalyticMS_SR.tif"
    with rasterio.open(sr_path, "w", **profile) as dst:
        dst.write(sr)
    footprint = shapely.geometry.mapping(shapely_wkt.loads(meta.footprint_wkt))
    return DoubleScene(
        scene_id,
        acquired,
        cloud_cover,
        {
            "ortho_analytic_4b": s.analytic,
            "ortho_analytic_4b_sr": sr_path,
            "ortho_analytic_4b_xml": s.metadata_xml,
            "ortho_udm2": udm_path,
        },
        s.ground_truth,
        json.loads(json.dumps(footprint)),
        left,
        top,
    )


def default_scenes(directory: Path) -> dict[str, DoubleScene]:
    """train (clear), train_late (same place, 4 days later, cloudier), test (15 km east), edge (600 m east
    of train: covers only a sliver of the train AOI)."""
    utc = timezone.utc
    specs = {
        "train": ("20170601_180425_0f35", 11, 626000.0, 4243000.0, datetime(2017, 6, 1, 18, 4, 25, tzinfo=utc), 0.02),
        "train_late": (
            "20170605_181012_1a2b",
            13,
            626000.0,
            4243000.0,
            datetime(2017, 6, 5, 18, 10, 12, tzinfo=utc),
            0.08,
        ),
        "test": ("20170601_180427_0f35", 12, 641000.0, 4241000.0, datetime(2017, 6, 1, 18, 4, 27, tzinfo=utc), 0.01),
        "edge": ("20170603_175959_0c1d", 14, 626420.0, 4243000.0, datetime(2017, 6, 3, 17, 59, 59, tzinfo=utc), 0.0),
    }
    out = {
        k: make_scene(directory / k, sid, seed, left, top, acq, cc)
        for k, (sid, seed, left, top, acq, cc) in specs.items()
    }
    del out["train_late"].assets["ortho_analytic_4b_sr"]  # like archive scenes without a surface-reflectance asset
    return out


#: the time windows of :func:`season_scenes` (the multi-date sample's three dates of 2017 fall in them)
SEASON_WINDOWS = ("2017-03-01/2017-03-31", "2017-06-01/2017-06-30", "2017-09-01/2017-09-30")


def season_scenes(directory: Path, size: int = 192) -> dict[str, DoubleScene]:
    """Time stacks of the SYNTHETIC multi-date sample as catalog items: ``train_t<i>`` and ``test_t<i>``
    (the same place on three dates in :data:`SEASON_WINDOWS`, from
    :func:`cropseg_plugins.sample.multidate.generate_stack`), plus two decoys in the June window over the
    train place: ``hazy`` (less cloud_cover than the real June scene but only 40 % clear by its udm2's
    ``clear_percent``) and ``sliver`` (clear, but its footprint covers a sliver of the AOI)."""
    from cropseg_plugins.sample.multidate import generate_stack

    out: dict[str, DoubleScene] = {}
    places = {"train": (31, 626000.0, 4243000.0), "test": (32, 641000.0, 4241000.0)}
    for role, (seed, left, top) in places.items():
        files, gt = generate_stack(
            directory / role, role=role, seed=seed, n_dates=3, width=size, height=size, left=left, top=top
        )
        for t, f in enumerate(files):
            meta = parse_metadata(f.metadata_xml)
            assert meta.acquired is not None
            out[f"{role}_t{t}"] = DoubleScene(
                f.scene_id,
                meta.acquired,
                0.08 if t == 1 else 0.02,
                {"ortho_analytic_4b": f.analytic, "ortho_analytic_4b_xml": f.metadata_xml, "ortho_udm2": f.udm2},
                gt,
                json.loads(json.dumps(shapely.geometry.mapping(shapely_wkt.loads(meta.footprint_wkt)))),
                left,
                top,
                clear_percent=92.0 if t == 1 else 98.0,
            )
    june = out["train_t1"]
    acquired = june.acquired.replace(day=june.acquired.day + 3)
    out["hazy"] = DoubleScene(
        f"{acquired:%Y%m%d_%H%M%S}_0a0a",
        acquired,
        0.03,
        dict(june.assets),
        june.ground_truth,
        june.footprint,
        june.left,
        june.top,
        clear_percent=40.0,
    )
    acquired = june.acquired.replace(day=june.acquired.day + 5)
    shifted = shapely.affinity.translate(shapely.geometry.shape(june.footprint), xoff=0.00343)  # ~300 m east
    out["sliver"] = DoubleScene(
        f"{acquired:%Y%m%d_%H%M%S}_0b0b",
        acquired,
        0.0,
        dict(june.assets),
        june.ground_truth,
        json.loads(json.dumps(shapely.geometry.mapping(shifted))),
        june.left,
        june.top,
        clear_percent=100.0,
    )
    return out


def utm_box_geojson(left: float, top: float, x0: float, y0: float, x1: float, y1: float) -> dict:
    """A polygon (EPSG:4326 GeoJSON) of the box x0..x1, y0..y1 metres right/down of (left, top) in UTM 10N."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32610", "EPSG:4326", always_xy=True)
    pts = [
        (left + x0, top - y0),
        (left + x1, top - y0),
        (left + x1, top - y1),
        (left + x0, top - y1),
        (left + x0, top - y0),
    ]
    return {"type": "Polygon", "coordinates": [[list(tr.transform(x, y)) for x, y in pts]]}


# --------------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------------


class BadFilter(ValueError):
    pass


def _value(item: dict, name: str) -> Any:
    return item["id"] if name == "id" else item["properties"].get(name)


def _time(text: str) -> datetime:
    dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def matches(f: dict, item: dict) -> bool:
    t, cfg = f.get("type"), f.get("config")
    if t == "AndFilter":
        return all(matches(c, item) for c in cfg)
    if t == "OrFilter":
        return any(matches(c, item) for c in cfg)
    if t == "NotFilter":
        return not matches(cfg, item)
    if t == "GeometryFilter":
        return shapely.geometry.shape(cfg).intersects(shapely.geometry.shape(item["geometry"]))
    if t in ("DateRangeFilter", "RangeFilter"):
        v = _value(item, f["field_name"])
        if v is None:
            return False
        conv = _time if t == "DateRangeFilter" else float
        v = conv(v)
        ops = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }
        return all(ops[k](v, conv(b)) for k, b in cfg.items())
    if t in ("StringInFilter", "NumberInFilter"):
        return _value(item, f["field_name"]) in cfg
    if t == "AssetFilter":
        return any(a in item["assets"] for a in cfg)
    if t == "PermissionFilter":
        return True
    raise BadFilter(f"unsupported filter type {t!r}")


# --------------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------------


@dataclass
class Order:
    id: str
    request: dict
    outcome: str
    bundle: str = ""
    polls: int = 0
    state: str = "queued"
    files: dict[str, Path] = field(default_factory=dict)


class PlanetDouble:
    """The double's state; ``with PlanetDouble(scenes, key, workdir) as d: d.url``."""

    def __init__(self, scenes: dict[str, DoubleScene], key: str, workdir: Path, page_size: int = 2):
        self.scenes = {s.id: s for s in scenes.values()}
        self.key, self.workdir, self.page_size = key, Path(workdir), page_size
        self.counts: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()
        self.faults: dict[str, deque[int]] = defaultdict(deque)
        self.order_outcome = "success"
        #: item ids whose delivery fails: an order holding one of them ends ``partial``, delivering the others
        self.failed_items: set[str] = set()
        self.truncate: Counter[str] = Counter()  # file name suffix -> cut-off downloads left
        self.corrupt: Counter[str] = Counter()  # file name suffix -> corrupted downloads left
        self.spec: dict | None = SPEC
        self.orders: dict[str, Order] = {}
        self.searches: dict[str, list[dict]] = {}
        self.requests: list[tuple[str, str]] = []
        self.request_times: list[float] = []  # time.monotonic() of each request's arrival
        self.authorized = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control --------------------------------------------------------------------------------------
    def fail(self, endpoint: str, *statuses: int) -> None:
        """Answer the next requests to ``endpoint`` (search, item, order_create, order_get, download, spec)
        with these statuses, one each."""
        self.faults[endpoint].extend(statuses)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> PlanetDouble:
        double = self

        class Handler(_Handler):
            pass

        Handler.double = double
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- behaviour ------------------------------------------------------------------------------------
    def items(self) -> list[dict]:
        return [s.item(self.url) for s in sorted(self.scenes.values(), key=lambda s: s.id)]

    def make_order(self, body: dict) -> tuple[int, dict]:
        products = body.get("products") or []
        if len(products) != 1:
            return 400, {"field": {"products": [{"message": "one product expected by the double"}]}}
        p = products[0]
        bundle, ids = p.get("product_bundle"), p.get("item_ids") or []
        if p.get("item_type") != ITEM_TYPE or not set(str(bundle).split(",")) <= set(BUNDLE_ASSETS):
            return 400, {"general": [{"message": f"Unsupported bundle {bundle!r} for {p.get('item_type')!r}"}]}
        unknown = [i for i in ids if i not in self.scenes]
        if unknown or not ids:
            return 400, {"general": [{"message": f"Unknown item ids {unknown}"}]}
        order = Order(str(uuid.uuid4()), body, self.order_outcome)
        self.orders[order.id] = order
        self.counts["orders_created"] += 1
        return 202, self.describe(order)

    def advance(self, order: Order) -> None:
        order.polls += 1
        if order.state == "queued":
            order.state = "running"
        elif order.state == "running":
            order.state = order.outcome
            failed = set(order.request["products"][0].get("item_ids") or []) & self.failed_items
            if order.state == "success" and failed:
                order.state = "partial"
                self.deliver(order, skip=failed)
            elif order.state == "success":
                p = order.request["products"][0]
                order.bundle = next(
                    (
                        b
                        for b in p["product_bundle"].split(",")
                        if all(set(BUNDLE_ASSETS[b]) <= set(self.scenes[i].assets) for i in p["item_ids"])
                    ),
                    "",
                )
                if order.bundle:
                    self.deliver(order)
                else:
                    order.state = "failed"

    def deliver(self, order: Order, skip: set[str] | None = None) -> None:
        """Write the order's files (clipped to the clip tool's AOI) and its manifest; the items in ``skip``
        are not delivered (a partial order)."""
        import rasterio.mask
        from rasterio.warp import transform_geom

        p = order.request["products"][0]
        bundle = order.bundle = order.bundle or p["product_bundle"].split(",")[0]
        clip = next((t["clip"]["aoi"] for t in order.request.get("tools") or [] if "clip" in t), None)
        root = self.workdir / order.id
        entries = []
        for sid in p["item_ids"]:
            if sid in (skip or set()):
                continue
            scene = self.scenes[sid]
            for asset in BUNDLE_ASSETS[bundle]:
                src_path = scene.assets[asset]
                stem = src_path.name.rsplit(".", 1)
                name = f"{stem[0]}_clip.{stem[1]}" if clip else src_path.name
                dest = root / ITEM_TYPE / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if clip and src_path.suffix == ".tif":
                    with rasterio.open(src_path) as src:
                        geom = transform_geom("EPSG:4326", src.crs, clip)
                        data, transform = rasterio.mask.mask(src, [geom], crop=True, nodata=0)
                        prof = {
                            **src.profile,
                            "height": data.shape[1],
                            "width": data.shape[2],
                            "transform": transform,
                            "tiled": False,
                        }
                        prof.pop("blockxsize", None), prof.pop("blockysize", None)
                    with rasterio.open(dest, "w", **prof) as dst:
                        dst.write(data)
                else:
                    shutil.copyfile(src_path, dest)
                order.files[f"{ITEM_TYPE}/{name}"] = dest
                raw = dest.read_bytes()
                entries.append(
                    {
                        "path": f"{ITEM_TYPE}/{name}",
                        "size": len(raw),
                        "media_type": "text/xml" if name.endswith(".xml") else "image/tiff",
                        "digests": {"md5": hashlib.md5(raw).hexdigest(), "sha256": hashlib.sha256(raw).hexdigest()},
                        "annotations": {
                            "planet/asset_type": asset,
                            "planet/bundle_type": bundle,
                            "planet/item_id": sid,
                            "planet/item_type": ITEM_TYPE,
                        },
                    }
                )
        manifest = root / "manifest.json"
        manifest.write_text(json.dumps({"name": "", "files": entries}, indent=2))
        order.files["manifest.json"] = manifest

    def describe(self, order: Order) -> dict:
        out = {
            "id": order.id,
            "name": order.request.get("name"),
            "state": order.state,
            "products": order.request.get("products"),
            "tools": order.request.get("tools", []),
            "created_on": "2017-06-10T00:00:00Z",
            "last_message": f"Order {order.state}",
            "_links": {"_self": f"{self.url}/compute/ops/orders/v2/{order.id}"},
        }
        if order.state == "failed":
            out["last_message"] = (
                "Order failed: no assets could be delivered (injected fault)"
                if order.outcome == "failed"
                else "Order failed: the bundle's assets are not available for the item"
            )
        if order.state == "partial":
            out["last_message"] = "Order partially succeeded: 1 of 3 assets failed (injected fault)"
            failed = set(order.request["products"][0].get("item_ids") or []) & self.failed_items
            if failed:
                n = len(order.request["products"][0]["item_ids"])
                out["last_message"] = f"Order partially succeeded: {len(failed)} of {n} items failed (injected fault)"
        if order.state == "success" or (order.state == "partial" and order.files):
            out["_links"]["results"] = [
                {
                    "name": f"{order.id}/{rel}",
                    "location": f"{self.url}/download/{order.id}/{rel}",
                    "delivery": "success",
                    "expires_at": "2099-01-01T00:00:00Z",
                }
                for rel in order.files
            ]
        return out


class _Handler(BaseHTTPRequestHandler):
    double: PlanetDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        payload: Any = None,
        body: bytes | None = None,
        ctype: str = "application/json",
        length: int | None = None,
    ) -> None:
        if body is None:
            body = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict:
        return json.loads(self._raw or b"{}")

    def _fault(self, endpoint: str) -> bool:
        d = self.double
        with d._lock:
            status = d.faults[endpoint].popleft() if d.faults[endpoint] else None
        if status is None:
            return False
        with d._lock:
            d.counts[f"fault_{status}"] += 1
        messages = {
            401: "Please provide a valid API key",
            403: "You do not have access to this resource",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }
        self._send(status, {"message": messages.get(status, "injected fault")})
        return True

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"api-key {self.double.key}":
            self.double.authorized += 1
            return True
        self._send(401, {"message": "Please provide a valid API key"})
        return False

    def _route(self, method: str) -> None:
        d, path = self.double, urlparse(self.path)
        self._raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # always drain the body
        parts = [p for p in path.path.split("/") if p]
        d.requests.append((method, path.path))
        d.request_times.append(time.monotonic())
        if path.path == "/compute/ops/bundles/spec" and method == "GET":
            if self._fault("spec"):
                return
            return self._send(200, d.spec) if d.spec is not None else self._send(404, {"message": "not found"})
        if parts[:1] == ["download"] and method == "GET":
            return self._download(parts[1], "/".join(parts[2:]))
        if not self._authorized():
            return
        if path.path == "/data/v1/quick-search" and method == "POST":
            return self._search(self._body())
        if parts[:3] == ["data", "v1", "searches"] and method == "GET":
            return self._page(parts[3], int(parse_qs(path.query).get("_page", ["1"])[0]))
        if parts[:3] == ["data", "v1", "item-types"] and len(parts) == 6 and method == "GET":
            if self._fault("item"):
                return
            scene = d.scenes.get(parts[5])
            return self._send(200, scene.item(d.url)) if scene else self._send(404, {"message": "Item not found"})
        if path.path == "/compute/ops/orders/v2" and method == "POST":
            if self._fault("order_create"):
                return
            with d._lock:
                status, payload = d.make_order(self._body())
            return self._send(status, payload)
        if parts[:4] == ["compute", "ops", "orders", "v2"] and len(parts) == 5 and method == "GET":
            if self._fault("order_get"):
                return
            with d._lock:
                order = d.orders.get(parts[4])
                if order is None:
                    return self._send(404, {"message": "Order not found"})
                d.counts["order_polls"] += 1
                d.advance(order)
                return self._send(200, d.describe(order))
        self._send(404, {"message": f"no route {method} {path.path}"})

    def _search(self, body: dict) -> None:
        d = self.double
        if self._fault("search"):
            return
        d.counts["searches"] += 1
        if body.get("item_types") != [ITEM_TYPE]:
            return self._send(400, {"message": f"item_types must be [{ITEM_TYPE}]"})
        try:
            found = [it for it in d.items() if matches(body.get("filter") or {"type": "AndFilter", "config": []}, it)]
        except (BadFilter, KeyError, TypeError, ValueError) as exc:
            return self._send(400, {"message": f"bad filter: {exc}"})
        sid = uuid.uuid4().hex
        d.searches[sid] = found
        self._page(sid, 1, counted=True)

    def _page(self, sid: str, page: int, counted: bool = False) -> None:
        d = self.double
        if not counted and self._fault("search"):
            return
        d.counts["search_pages"] += 1
        found = d.searches.get(sid)
        if found is None:
            return self._send(404, {"message": "search not found"})
        n = d.page_size
        chunk = found[(page - 1) * n : page * n]
        links = {"_self": f"{d.url}/data/v1/searches/{sid}/results?_page={page}"}
        if page * n < len(found):
            links["_next"] = f"{d.url}/data/v1/searches/{sid}/results?_page={page + 1}"
        self._send(200, {"type": "FeatureCollection", "features": chunk, "_links": links})

    def _download(self, order_id: str, rel: str) -> None:
        d = self.double
        if self._fault("download"):
            return
        order = d.orders.get(order_id)
        path = order.files.get(rel) if order else None
        if path is None:
            return self._send(404, {"message": "no such file"})
        name = Path(rel).name
        d.downloads[name] += 1
        data = path.read_bytes()
        ctype = "application/json" if name.endswith(".json") else "application/octet-stream"
        with d._lock:
            cut = next((s for s in d.truncate if d.truncate[s] > 0 and name.endswith(s)), None)
            bad = next((s for s in d.corrupt if d.corrupt[s] > 0 and name.endswith(s)), None)
            if cut:
                d.truncate[cut] -= 1
            elif bad:
                d.corrupt[bad] -= 1
        if cut:  # announce the full length, send half, hang up
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Disposition", f'attachment; filename="{name}"')
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if bad:
            data = bytes(reversed(data))
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")
