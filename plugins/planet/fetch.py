"""``cropseg-fetch``: the Planet source's acquisition step on its own.

``cropseg-fetch search [overrides]`` lists the candidate scenes of the train and test parts (nothing is
ordered); ``cropseg-fetch download [overrides]`` also orders and downloads them into the cache that
``cropseg source=planet`` then reuses. Overrides are the same Hydra overrides as ``cropseg``'s
(``source=planet`` is implied), e.g. ``source.train.aoi=aoi-train.geojson source.start=2016-08-01``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cropseg.errors import (
    ConfigError,
    CropsegError,
    OutputError,
    SourceError,
    write_failure_path,
    write_failure_reason,
)
from cropseg.preflight import check_output_dir
from cropseg.signals import handle_signals, report

PROG = "cropseg-fetch"


def _source(overrides: Sequence[str]):  # noqa: ANN202 - a PlanetSource
    from cropseg.config import compose, instantiate
    from cropseg.plugins import Registry, get_plugin_manager

    cfg = compose(["source=planet", *overrides])
    if cfg.source.get("name") != "planet":
        raise ConfigError(f"{PROG} works with source=planet, not source={cfg.source.get('name')}")
    block = list(cfg.get("plugins", {}).get("block", []) or [])
    source = instantiate(Registry.from_plugin_manager(get_plugin_manager(block=block)), "source", cfg.source)
    return source, Path(cfg.get("cache_dir") or ".cache/cropseg").expanduser().resolve() / "planet"


def search(source, api) -> int:  # noqa: ANN001
    from .search import choose, table

    status = 0
    for role in ("train", "test"):
        part = source.roles[role]
        if part["scene_id"]:
            cand = source.pick(api, role)
            print(f"{role}: scene {cand.id} given (source.{role}.scene_id)\n{table([cand], cand.id)}\n")
            continue
        if part["windows"]:
            for i, (label, wcands, text, best) in enumerate(source.window_choices(api, role)):
                print(f"{role} window {i} {label}: {len(wcands)} Planet {source.item_type} scenes match ({text})")
                if best is None:
                    print(
                        f"{PROG}: error: source.windows: no usable scene over the {role} AOI in window {i} {label}",
                        file=sys.stderr,
                    )
                    status = 1
                if wcands:
                    print(
                        f"(* = most usable: AOI coverage x clear fraction)\n{table(wcands, best and best.id, source.max_candidates)}"
                    )
                print()
            continue
        cands, text = source.search(api, role)
        print(f"{role}: {len(cands)} Planet {source.item_type} scenes match ({text})")
        try:
            chosen = choose(cands, source.rule, source.min_coverage, text, f"the {role} AOI").id
        except SourceError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            chosen, status = None, 1
        if cands:
            print(f"(* = would be chosen by {source.rule})\n{table(cands, chosen, source.max_candidates)}")
        print()
    return status


def download(source, api, cache: Path) -> int:  # noqa: ANN001
    picks = {  # every role's scenes chosen before anything is ordered
        role: source.pick_windows(api, role) if source.roles[role]["windows"] else [source.pick(api, role)]
        for role in ("train", "test")
    }
    for role, cands in picks.items():
        if source.roles[role]["windows"]:
            delivery = source.fetch_stack(api, role, cands, cache)
        else:
            delivery = source.fetch(api, role, cands[0], cache)
        what = f"scene {cands[0].id}" if len(cands) == 1 else f"scenes {', '.join(c.id for c in cands)}"
        print(f"{role}: {what}, order {delivery.order_id}{' (cached)' if delivery.from_cache else ''}")
        for e in delivery.entries:
            print(f"  {delivery.cache.path(e)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=("search", "download"),
        help="search: list candidates only; download: order and download into the cache",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides as for cropseg, e.g. source.train.aoi=a.geojson")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("cropseg")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    cache: Path | None = None
    try:
        with handle_signals():  # SIGTERM / SIGINT: partial downloads are cleaned up, one line, exit 143 / 130
            source, cache = _source(args.overrides)
            if args.command == "download":  # where the scenes go takes files, before any request
                check_output_dir(cache, "cache_dir")
            for role in ("train", "test"):  # local inputs first
                source.aoi(role)
            api = source.api()
            return search(source, api) if args.command == "search" else download(source, api, cache)
    except CropsegError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if write_failure_reason(exc) is None:
            raise
        where = write_failure_path(exc) or cache or "the Planet cache (cache_dir)"
        print(f"{PROG}: error: {OutputError.from_os_error('a download', where, exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # also cropseg.signals.Terminated
        return report(PROG, exc, "partial downloads are discarded and the next download resumes the Planet order")
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
