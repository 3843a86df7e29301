"""cropseg's own code raises no deprecation warnings: pyproject's pytest ``filterwarnings`` turns one raised in a
cropseg module into an error in every test. One third-party message is ignored there even when Python
attributes it to a cropseg line (rasterio's compiled readers multiply Affine transforms with `*`), so this
checks that cropseg itself never multiplies transforms with `*` (affine deprecates it for `@`)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
AFFINE_STAR = re.compile(r"(transform\w*|Affine\.\w+\([^)]*\))\s*\*\s*[\w(~]")


def test_no_affine_products_with_star_in_cropseg():
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for folder in ("framework", "plugins")
        for path in sorted((REPO / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if AFFINE_STAR.search(line.split("#")[0])
    ]
    assert not hits, "use `@` for Affine products:\n" + "\n".join(hits)


def test_the_pattern_finds_star_products():
    assert AFFINE_STAR.search("lon, lat = dst_transform * (0, 0)")
    assert AFFINE_STAR.search("t = src.transform * src.transform.scale(2, 2)")
    assert AFFINE_STAR.search("Affine.translation(x, y) * Affine.scale(3, -3)")
    assert not AFFINE_STAR.search("t = src.transform @ src.transform.scale(2, 2)")


def test_own_deprecation_warnings_are_errors_and_third_party_filters_are_narrow():
    filters = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert filters[:2] == ["error::DeprecationWarning:cropseg", "error::PendingDeprecationWarning:cropseg"]
    for entry in filters[2:]:
        action, message, category, module = entry.split(":", 3)
        assert action == "ignore" and message and category and module, entry  # by message, category and module
