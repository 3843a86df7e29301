"""The Planet SDK behind one small facade: authentication, bounded retries, offline bundle spec, and
SDK errors turned into one-line :class:`~cropseg.errors.SourceError` messages.

Everything goes through the ``planet`` SDK's sync client (:class:`planet.Planet`): the Data API
(``data.search``, ``data.get_item``) and the Orders API (``orders.create_order``, ``orders.wait``,
``orders.get_order``, ``orders.download_asset``). The API key comes from ``PL_API_KEY`` or the SDK's
own auth file (``planet auth login``); it is handed to the SDK and never stored, logged or returned.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from cropseg.errors import ConfigError, SourceError

log = logging.getLogger("cropseg.planet")
T = TypeVar("T")

DEFAULT_API_URL = "https://api.planet.com"
KEY_ENV = "PL_API_KEY"
KEY_HELP = (
    f"set {KEY_ENV} to your Planet API key (export {KEY_ENV}=...; the key is on your Planet account "
    "page) or log in with `planet auth login`"
)
#: SDK loggers: requests are logged at INFO and headers at DEBUG; cropseg reports its own progress.
QUIET_LOGGERS = ("planet", "planet_auth", "planet_auth_utils", "httpx", "httpcore")


def _sdk() -> Any:
    import planet

    return planet


def credentials() -> Any:
    """A :class:`planet.Auth` from ``PL_API_KEY``, else from the SDK's saved auth (``~/.planet.json``,
    ``~/.planet/``); :class:`SourceError` when there is neither."""
    planet = _sdk()
    key = os.environ.get(KEY_ENV, "").strip()
    if key:
        return planet.Auth.from_key(key)
    from planet.constants import SECRET_FILE_PATH

    if SECRET_FILE_PATH.is_file() or (SECRET_FILE_PATH.parent / ".planet").is_dir():
        try:
            return planet.Auth.from_user_default_session()
        except Exception as exc:  # noqa: BLE001 - planet_auth raises its own types for broken profiles
            raise SourceError(
                f"Planet auth file {SECRET_FILE_PATH} is unusable ({type(exc).__name__}); {KEY_HELP}"
            ) from None
    raise SourceError(f"no Planet API key: {KEY_HELP}")


def seed_bundles_spec(api_url: str, timeout: float = 10.0) -> str:
    """Make the SDK's product-bundle validation work offline.

    The SDK loads the bundles spec lazily from a fixed live URL, whatever base URL the client uses. Fill
    its cache (``planet.specs.PRODUCT_BUNDLES.cache``) from ``{api_url}/compute/ops/bundles/spec``, else
    from the copy shipped with cropseg (PSScene bundles only). Returns where the spec came from.
    """
    import httpx
    from planet import specs

    if getattr(specs.PRODUCT_BUNDLES, "cache", None) is not None:
        return "already loaded"
    url = f"{api_url.rstrip('/')}/compute/ops/bundles/spec"
    origin = url
    try:
        resp = httpx.get(url, timeout=timeout)
        resp.raise_for_status()
        bundles = resp.json()["bundles"]
        if not isinstance(bundles, dict) or not bundles:
            raise ValueError("no bundles")
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        origin = "the copy shipped with cropseg"
        bundles = json.loads(resources.files(__package__).joinpath("bundles_spec.json").read_text())["bundles"]
    item_types = {t for b in bundles.values() for t in b.get("assets", {})}
    specs.PRODUCT_BUNDLES.cache = {"bundles": bundles, "bundle_names": bundles.keys(), "item_types": item_types}
    log.debug("Planet bundles spec from %s", origin)
    return origin


def bundle_assets(item_type: str, bundle: str) -> list[str]:
    """The asset types ``bundle`` delivers for ``item_type`` (from the seeded spec); ConfigError if the
    SDK's spec does not know the pair."""
    from planet import specs

    try:
        item_type = specs.validate_item_type(item_type)
        bundle = specs.validate_bundle(item_type, bundle)
    except specs.SpecificationException as exc:
        raise ConfigError(f"source.bundle / source.item_type: {exc}") from None
    return list(specs.PRODUCT_BUNDLES["bundles"][bundle]["assets"][item_type])


def primary_asset(assets: Iterable[str]) -> str | None:
    """The image asset of a bundle (not the XML, RPC or udm)."""
    for a in assets:
        if not (a.endswith(("_xml", "_rpc")) or "udm" in a):
            return a
    return None


def _make_session_class() -> type:
    from planet import Session, exceptions

    class Unavailable(exceptions.ServerError):
        """HTTP 5xx other than 502 (which the SDK itself retries)."""

        def __init__(self, status: int, text: str):
            super().__init__(f"HTTP {status}: {text}")
            self.status = status

    class RetryingSession(Session):
        """The SDK session, except every 5xx other than 502 raises :class:`Unavailable` with its status
        (the SDK maps 500 to ServerError and 503/504 to a bare APIError without the status)."""

        @classmethod
        def _convert_and_raise(cls, error: Any) -> None:
            status = error.response.status_code
            if status >= 500 and status != 502:
                raise Unavailable(status, error.response.text[:300])
            super()._convert_and_raise(error)

    RetryingSession.Unavailable = Unavailable
    return RetryingSession


def _set_rate_limit(session: Any, per_second: float) -> None:
    """Space the session's requests at least ``1 / per_second`` apart (0 = no spacing). The SDK session
    throttles to 10 requests per second (``planet.http.RATE_LIMIT``) through its limiter, which has no public
    setter; a limiter of the same class with the same cap on concurrent requests replaces it."""
    from planet import http

    if per_second == http.RATE_LIMIT:
        return
    limiter = getattr(session, "_limiter", None)
    if limiter is None:  # a future SDK without the limiter: nothing to adjust
        log.debug("planet SDK session has no _limiter; source.rate_limit not applied")
        return
    session._limiter = type(limiter)(rate_limit=per_second, max_workers=getattr(limiter, "limit", http.MAX_ACTIVE))


class PlanetAPI:
    """The few Data/Orders API calls cropseg needs, with bounded retries and one-line errors."""

    def __init__(
        self,
        api_url: str | None = None,
        *,
        retries: int = 5,
        retry_backoff_max: float = 64.0,
        poll_seconds: float = 5.0,
        max_polls: int = 720,
        rate_limit: float = 10.0,
    ):
        planet = _sdk()
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.retries, self.backoff_max = int(retries), float(retry_backoff_max)
        self.poll_seconds, self.max_polls = float(poll_seconds), int(max_polls)
        session_cls = _make_session_class()
        self._unavailable = session_cls.Unavailable
        session = session_cls(auth=credentials())
        session.max_retries = self.retries  # the SDK's own retries of 429, 502 and connection errors
        session.max_retry_backoff = self.backoff_max
        self.rate_limit = float(rate_limit)
        _set_rate_limit(session, self.rate_limit)
        self.pl = planet.Planet(session=session, base_url=self.api_url)
        self.spec_origin = seed_bundles_spec(self.api_url)

    # -- calls -------------------------------------------------------------------------------------
    def search(self, item_type: str, search_filter: dict, limit: int = 0) -> list[dict]:
        return self.call(
            f"searching {item_type} scenes",
            lambda: list(self.pl.data.search([item_type], search_filter=search_filter, limit=limit)),
        )

    def get_item(self, item_type: str, item_id: str) -> dict | None:
        from planet import exceptions

        try:
            return self.call(
                f"looking up scene {item_id}",
                lambda: self.pl.data.get_item(item_type, item_id),
                passthrough=(exceptions.MissingResource,),
            )
        except exceptions.MissingResource:
            return None

    def create_order(self, request: dict) -> dict:
        return self.call("placing the order", lambda: self.pl.orders.create_order(request))

    def get_order(self, order_id: str) -> dict | None:
        from planet import exceptions

        try:
            return self.call(
                f"reading order {order_id}",
                lambda: self.pl.orders.get_order(order_id),
                passthrough=(exceptions.MissingResource,),
            )
        except exceptions.MissingResource:
            return None

    def wait(self, order_id: str, callback: Callable[[str], None]) -> str:
        from planet import exceptions

        try:
            return self.call(
                f"waiting for order {order_id}",
                lambda: self.pl.orders.wait(
                    order_id,
                    delay=self.poll_seconds,  # type: ignore[arg-type]
                    max_attempts=self.max_polls,
                    callback=callback,
                ),
                passthrough=(exceptions.ClientError,),
            )
        except exceptions.ClientError as exc:
            raise SourceError(
                f"Planet order {order_id} did not finish ({exc}); run again later to resume it "
                "(the order id is kept in the cache), or raise source.max_polls"
            ) from None

    def download(self, location: str, dest: Path) -> None:
        """Stream one result file to ``dest`` (overwritten). Interrupted transfers raise ``httpx`` errors
        for the caller to retry; API errors become :class:`SourceError`."""
        import httpx

        self.call(
            f"downloading {dest.name}",
            lambda: self.pl.orders.download_asset(
                location, filename=dest.name, directory=dest.parent, overwrite=True, progress_bar=False
            ),
            passthrough=(httpx.TransportError,),
        )

    # -- retries and errors ------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[[], T], passthrough: tuple[type[BaseException], ...] = ()) -> T:
        """Run one SDK call: 5xx answers are retried (bounded, exponential backoff capped at
        ``retry_backoff_max``); 429, 502 and connection errors were already retried by the SDK session.
        Anything left becomes one :class:`SourceError` line."""
        import httpx
        from planet import exceptions, specs

        attempt = 0
        while True:
            try:
                return fn()
            except passthrough:
                raise
            except self._unavailable as exc:
                if attempt >= self.retries:
                    raise SourceError(
                        f"Planet API at {self.api_url} failed while {what}: HTTP {exc.status} "
                        f"after {attempt + 1} attempts; try again later"
                    ) from None
                attempt += 1
                wait = min(2.0**attempt, self.backoff_max)
                log.warning(
                    "Planet API HTTP %d while %s; retry %d/%d in %.1f s", exc.status, what, attempt, self.retries, wait
                )
                time.sleep(wait)
            except exceptions.InvalidAPIKey:
                raise SourceError(
                    f"Planet API at {self.api_url} rejected the API key (HTTP 401) while {what}: {KEY_HELP}"
                ) from None
            except exceptions.NoPermission:
                raise SourceError(
                    f"Planet API at {self.api_url} refused access (HTTP 403) while {what}: the API "
                    f"key lacks permission for this; check {KEY_ENV} and your Planet plan"
                ) from None
            except (exceptions.TooManyRequests, exceptions.OverQuota):
                raise SourceError(
                    f"Planet API at {self.api_url} kept rate-limiting (HTTP 429) while {what}, "
                    f"{self.retries} retries used; wait a minute and run again"
                ) from None
            except exceptions.BadGateway:
                raise SourceError(
                    f"Planet API at {self.api_url} failed while {what}: HTTP 502 after "
                    f"{self.retries} retries; try again later"
                ) from None
            except exceptions.BadQuery as exc:
                raise SourceError(
                    f"Planet API refused the request (HTTP 400) while {what}: {_first_line(exc)}"
                ) from None
            except exceptions.MissingResource as exc:
                raise SourceError(f"Planet API: not found (HTTP 404) while {what}: {_first_line(exc)}") from None
            except exceptions.APIError as exc:
                raise SourceError(f"Planet API error while {what}: {_first_line(exc)}") from None
            except specs.FetchBundlesSpecError:
                raise SourceError(f"Planet bundles spec unavailable while {what}") from None
            except specs.SpecificationException as exc:
                raise ConfigError(f"source: {exc}") from None
            except exceptions.ClientError as exc:
                raise SourceError(f"Planet SDK error while {what}: {_first_line(exc)}") from None
            except httpx.HTTPError as exc:
                raise SourceError(
                    f"cannot reach the Planet API at {self.api_url} while {what}: "
                    f"{type(exc).__name__}: {_first_line(exc)}"
                ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
