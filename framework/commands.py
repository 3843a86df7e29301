"""Subcommands of ``cropseg`` besides running experiments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .plugins import STAGES, Registry, get_plugin_manager


def plugins_command(argv: Sequence[str]) -> int:
    """``cropseg plugins``: installed plugins per stage with the distribution and version they come from."""
    parser = argparse.ArgumentParser(prog="cropseg plugins", description=plugins_command.__doc__)
    parser.parse_args(list(argv))
    reg = Registry.from_plugin_manager(get_plugin_manager())
    width = max([len(n) for s in STAGES for n in reg.names(s)] + [4])
    for stage in STAGES:
        print(f"{stage}:")
        for name in reg.names(stage):
            info = reg.stages[stage][name]
            print(f"  {name:<{width}}  {info.origin}  ({info.plugin})")
    from .config import plugin_config_files

    configs, problems = plugin_config_files()
    if configs or problems:
        print("configs shipped by plugins:")
        cwidth = max([len(f"{c.group}/{c.option}") for c in configs] + [4])
        for c in configs:
            print(f"  {c.group + '/' + c.option:<{cwidth}}  {c.provider}  ({c.path})")
        for p in problems:
            print(f"  warning: {p}")
    if reg.failed:
        print("failed to load:")
        for name, err in sorted(reg.failed.items()):
            print(f"  {name}: {err}")
    return 0
