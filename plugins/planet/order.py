"""Order one scene through the Orders API and download it into its cache folder, resuming what an
earlier run left: a known order is polled again instead of re-ordered, and only missing or corrupt files
are fetched."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from cropseg.errors import SourceError

from .cache import ManifestEntry, SceneCache
from .client import PlanetAPI

log = logging.getLogger("cropseg.planet")
FINAL_BAD = ("failed", "partial", "cancelled")


@dataclass(frozen=True)
class Delivery:
    """The verified files of one ordered scene."""

    cache: SceneCache
    entries: list[ManifestEntry]
    order_id: str | None
    from_cache: bool

    @property
    def bundle(self) -> str | None:
        """The bundle Planet delivered (the manifest's ``planet/bundle_type``; differs from the ordered one
        when a fallback bundle was used)."""
        return next(
            (str(e.annotations["planet/bundle_type"]) for e in self.entries if e.annotations.get("planet/bundle_type")),
            None,
        )


class _StateLog:
    """Order progress for the log: every state change, and a 'still ...' line at most every 30 s."""

    def __init__(self, order_id: str, every: float = 30.0):
        self.order_id, self.every = order_id, every
        self.start = self.last_log = time.monotonic()
        self.state: str | None = None

    def __call__(self, state: str) -> None:
        now = time.monotonic()
        if state != self.state or now - self.last_log >= self.every:
            log.info(
                "Planet order %s: %s%s (%.0f s)",
                self.order_id,
                "" if state != self.state else "still ",
                state,
                now - self.start,
            )
            self.state, self.last_log = state, now


def fetch(api: PlanetAPI, cache: SceneCache, request: dict, *, what: str, download_retries: int = 3) -> Delivery:
    """The scene's verified files: from the cache when every file matches the manifest, else ordered
    (or the earlier order resumed) and downloaded."""
    entries = cache.verified()
    if entries is not None:
        log.info(
            "%s: cached in %s (%d files verified against the order manifest), no new order",
            what,
            cache.dir,
            len(entries),
        )
        return Delivery(cache, entries, cache.order_id(), True)
    cache.dir.mkdir(parents=True, exist_ok=True)
    order = _resume_or_place(api, cache, request, what)
    oid = str(order["id"])
    state = str(order.get("state"))
    if state not in ("success", *FINAL_BAD):
        state = api.wait(oid, _StateLog(oid))
        order = api.get_order(oid) or order
    if state != "success":
        cache.forget_order()
        msg = order.get("last_message") or "; ".join(map(str, order.get("error_hints") or [])) or "no reason given"
        msg = " ".join(str(msg).split())[:300] + _undelivered(request, order)
        raise SourceError(
            f"Planet order {oid} for {what} ended '{state}': {msg}. Nothing from it is used; the next "
            "run places a new order (or pick another scene or source.bundle)"
        )
    return Delivery(cache, _download(api, cache, order, what, download_retries), oid, False)


def _undelivered(request: dict, order: dict) -> str:
    """For a partial order of several scenes: which of them have no delivered file (text to append)."""
    ids = [str(i) for p in request.get("products") or [] for i in p.get("item_ids") or []]
    names = [PurePosixPath(str(r.get("name", ""))).name for r in (order.get("_links") or {}).get("results") or []]
    missing = [i for i in ids if not any(n.startswith(f"{i}_") for n in names)]
    if len(ids) < 2 or not missing or len(missing) == len(ids) and not names:
        return ""
    return f" (not delivered: {', '.join(missing)})"


def _resume_or_place(api: PlanetAPI, cache: SceneCache, request: dict, what: str) -> dict:
    oid = cache.order_id()
    if oid:
        order = api.get_order(oid)
        if order is not None and order.get("state") not in FINAL_BAD:
            log.info("%s: resuming Planet order %s (%s)", what, oid, order.get("state"))
            return order
        cache.forget_order()
    order = api.create_order(request)
    if not order.get("id"):
        raise SourceError(f"Planet API answered the order for {what} without an order id")
    cache.save_order(str(order["id"]), request)
    log.info("%s: placed Planet order %s (%s)", what, order["id"], order.get("state"))
    return order


def _results(order: dict) -> dict[str, str]:
    """Result locations by path inside the order folder (``<order_id>/PSScene/x.tif`` -> ``PSScene/x.tif``)."""
    out = {}
    for r in (order.get("_links") or {}).get("results") or []:
        if r and r.get("name") and r.get("location"):
            parts = PurePosixPath(str(r["name"])).parts
            out[str(PurePosixPath(*parts[1:])) if len(parts) > 1 else parts[0]] = str(r["location"])
    return out


def _download(api: PlanetAPI, cache: SceneCache, order: dict, what: str, retries: int) -> list[ManifestEntry]:
    import httpx

    oid = str(order["id"])
    results = _results(order)
    if "manifest.json" not in results:
        raise SourceError(f"Planet order {oid} for {what} has no manifest.json among its results")
    try:
        entries = None
        for _ in range(retries + 1):
            tmp = cache.temp_path("manifest.json")
            try:
                api.download(results["manifest.json"], tmp)
            except httpx.TransportError:
                tmp.unlink(missing_ok=True)
                continue
            if (entries := cache.install_manifest(tmp)) is not None:
                break
        if entries is None:
            raise SourceError(
                f"Planet order {oid} for {what}: manifest.json could not be downloaded intact "
                f"({retries + 1} attempts); run again"
            )
        missing = cache.invalid(entries)
        if missing:
            log.info("%s: downloading %d of %d files of order %s", what, len(missing), len(entries), oid)
        failed = []
        for i, entry in enumerate(missing, 1):
            try:
                _download_one(api, cache, entry, results, oid, retries)
            except SourceError as exc:  # fetch the others anyway: the next run needs only the failed ones
                failed.append(exc)
                continue
            log.info("%s: %s verified (%d/%d)", what, entry.path, i, len(missing))
        if failed:
            more = f" (and {len(failed) - 1} more file(s))" if len(failed) > 1 else ""
            raise SourceError(f"{failed[0]}{more}")
        return entries
    finally:
        cache.clean_partials()


def _download_one(
    api: PlanetAPI, cache: SceneCache, entry: ManifestEntry, results: dict[str, str], oid: str, retries: int
) -> None:
    import httpx

    location = results.get(entry.path)
    if location is None:
        raise SourceError(f"Planet order {oid}: the manifest lists {entry.path} but the order has no link to it")
    problem = ""
    for attempt in range(retries + 1):
        tmp = cache.temp_path(entry.path)
        try:
            api.download(location, tmp)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            problem = f"transfer cut off: {type(exc).__name__}"
        else:
            if cache.install(entry, tmp):
                return
            problem = "checksum mismatch with the order manifest"
        if attempt < retries:
            log.warning("Planet order %s: %s (%s); retrying", oid, entry.path, problem)
    raise SourceError(
        f"Planet order {oid}: download of {entry.path} failed {retries + 1} times ({problem}); "
        "nothing corrupt was kept, run again to fetch only the missing files"
    )
