"""Parser for Planet PSScene metadata XML (``*_AnalyticMS_metadata.xml``): reflectance coefficients and
provenance."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import InputFileError

NS = {
    "ps": "http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level",
    "eop": "http://earth.esa.int/eop",
    "opt": "http://earth.esa.int/opt",
    "gml": "http://www.opengis.net/gml",
}


@dataclass(frozen=True)
class PlanetMetadata:
    """What cropseg needs from a scene's metadata XML."""

    path: Path
    identifier: str
    acquired: datetime | None
    reflectance_coefficients: dict[int, float]
    epsg: int | None = None
    num_bands: int | None = None
    cloud_cover: float | None = None
    footprint_wkt: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def scene_id(self) -> str:
        """The item id (``20160831_180231_0e0e``) without the product suffix."""
        return self.identifier.split("_3B_")[0]

    def gains(self, bands: int = 4) -> tuple[float, ...]:
        """DN -> TOA reflectance multipliers for bands 1..``bands``."""
        missing = [b for b in range(1, bands + 1) if b not in self.reflectance_coefficients]
        if missing:
            raise InputFileError(f"{self.path}: no reflectanceCoefficient for band(s) {missing}")
        return tuple(self.reflectance_coefficients[b] for b in range(1, bands + 1))


def _text(root: ET.Element, path: str) -> str | None:
    el = root.find(path, NS)
    return el.text.strip() if el is not None and el.text else None


def parse_metadata(path: Path | str) -> PlanetMetadata:
    """Parse a PSScene analytic metadata XML; one clear :class:`InputFileError` if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: metadata XML not found")
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputFileError(f"{p}: not a readable XML file: {exc}") from None
    coefs: dict[int, float] = {}
    for band in root.iter(f"{{{NS['ps']}}}bandSpecificMetadata"):
        num = _text(band, "ps:bandNumber")
        coef = _text(band, "ps:reflectanceCoefficient")
        if num is None or coef is None:
            continue
        try:
            coefs[int(num)] = float(coef)
        except ValueError:
            raise InputFileError(f"{p}: bad reflectanceCoefficient {coef!r} for band {num}") from None
    if not coefs:
        raise InputFileError(
            f"{p}: no ps:bandSpecificMetadata/ps:reflectanceCoefficient (not a Planet analytic metadata XML?)"
        )
    if any(c <= 0 for c in coefs.values()):
        raise InputFileError(f"{p}: reflectance coefficients must be positive, got {coefs}")
    ident = _text(root, ".//eop:identifier") or p.stem.replace("_metadata", "")
    acq_text = _text(root, ".//ps:acquisitionDateTime") or _text(root, ".//gml:beginPosition")
    acquired = None
    if acq_text:
        try:
            acquired = datetime.fromisoformat(acq_text.replace("Z", "+00:00"))
        except ValueError:
            acquired = None
    epsg = _text(root, ".//ps:epsgCode")
    nb = _text(root, ".//ps:numBands")
    cc = _text(root, ".//opt:cloudCoverPercentage")
    coords = _text(root, ".//gml:target//gml:coordinates")
    wkt = None
    if coords:
        pts = ", ".join(" ".join(xy.split(",")) for xy in coords.split())
        wkt = f"POLYGON (({pts}))"
    return PlanetMetadata(
        path=p,
        identifier=ident,
        acquired=acquired,
        reflectance_coefficients=dict(sorted(coefs.items())),
        epsg=int(epsg) if epsg and epsg.isdigit() else None,
        num_bands=int(nb) if nb and nb.isdigit() else None,
        cloud_cover=float(cc) if cc else None,
        footprint_wkt=wkt,
        extra={
            k: v
            for k, v in {
                "platform": _text(root, ".//eop:Platform/eop:serialIdentifier"),
                "instrument": _text(root, ".//eop:Instrument/eop:shortName"),
            }.items()
            if v
        },
    )
