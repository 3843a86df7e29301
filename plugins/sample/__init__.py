"""Source ``sample`` (the default): a SYNTHETIC PSScene-like train scene and test scene near Sacramento.

Generated deterministically from ``seed`` by :mod:`cropseg_plugins.sample.synth` into the cache directory
once (analytic GeoTIFF, Planet-schema metadata XML, DWR-style ground truth GeoJSON) and reused; the
scenes then go through the same code as real ones: reflectance from the XML coefficients, ground truth
from the GeoJSON.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.planet_metadata import parse_metadata
from cropseg.types import Scene, SceneSet, VectorGroundTruth

#: bump when the generator changes so caches are not reused across versions
GENERATOR_VERSION = 1
#: largest side of a synthetic scene in pixels
MAX_SIDE = 20000
# (role, seed offset, top-left UTM 10N easting/northing, acquisition) - the test scene lies ~15 km east
SCENES = (
    ("train", 0, 626000.0, 4243000.0, datetime(2017, 6, 1, 18, 4, 25, tzinfo=timezone.utc)),
    ("test", 1, 641000.0, 4241000.0, datetime(2017, 6, 1, 18, 4, 27, tzinfo=timezone.utc)),
)


class SampleSource:
    synthetic = True

    def __init__(self, size: int | list[int] = 1000, seed: int = 42):
        if not isinstance(size, int) and len(size) != 2:
            raise ConfigError(f"source.size={list(size)}: one side or [height, width]")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if min(h, w) < 64:
            raise ConfigError(f"source.size: at least 64 pixels per side, got {size!r}")
        if max(h, w) > MAX_SIDE:
            raise ConfigError(
                f"source.size={size!r}: at most {MAX_SIDE} pixels per side (a PlanetScope scene is about "
                f"9000 x 4000 px; the synthetic field layout is built in memory)"
            )
        self.height, self.width, self.seed = int(h), int(w), int(seed)

    def check(self, workdir: Path) -> None:
        """Before a run starts: the scenes not yet generated fit on the cache's disk (uncompressed estimate)."""
        import shutil

        folder = Path(workdir) / f"v{GENERATOR_VERSION}-seed{self.seed}-{self.width}x{self.height}"
        if folder.is_dir() and len(list(folder.glob("*_AnalyticMS.tif"))) >= len(SCENES):
            return
        need = len(SCENES) * self.width * self.height * 4 * 2  # 4 bands of uint16
        free = shutil.disk_usage(Path(workdir) if Path(workdir).exists() else Path(workdir).parent).free
        if need > free:
            raise ConfigError(
                f"source.size={self.width}x{self.height}: the two synthetic scenes need up to "
                f"{need / 2**30:.1f} GiB in {workdir}, only {free / 2**30:.1f} GiB free"
            )

    def load(self, workdir: Path) -> SceneSet:
        import logging

        from .synth import SyntheticScene, generate_scene

        folder = Path(workdir) / f"v{GENERATOR_VERSION}-seed{self.seed}-{self.width}x{self.height}"
        scenes = {}
        for role, offset, left, top, acquired in SCENES:
            seed = self.seed * 10 + offset
            scene_id = acquired.strftime("%Y%m%d_%H%M%S") + f"_{seed % 65536:04x}"  # Planet-style item id
            files = SyntheticScene(
                scene_id,
                folder / f"{scene_id}_3B_AnalyticMS.tif",
                folder / f"{scene_id}_3B_AnalyticMS_metadata.xml",
                folder / f"{scene_id}_ground_truth.geojson",
            )
            if not all(p.is_file() for p in (files.analytic, files.metadata_xml, files.ground_truth)):
                logging.getLogger("cropseg").info(
                    "generating the SYNTHETIC %s scene (%dx%d px) into %s", role, self.width, self.height, folder
                )
                files = generate_scene(
                    folder,
                    scene_id=scene_id,
                    seed=seed,
                    width=self.width,
                    height=self.height,
                    left=left,
                    top=top,
                    acquired=acquired,
                )
            meta = parse_metadata(files.metadata_xml)
            scenes[role] = Scene(
                name=role,
                path=files.analytic,
                gains=meta.gains(4),
                nodata=0,
                ground_truth=VectorGroundTruth(files.ground_truth),
                metadata={
                    "scene_id": meta.scene_id,
                    "acquired": meta.acquired.isoformat() if meta.acquired else None,
                    "synthetic": True,
                    "reflectance": "toa_xml",
                },
            )
        return SceneSet(
            train=scenes["train"],
            test=scenes["test"],
            synthetic=True,
            metadata={"generator_version": GENERATOR_VERSION, "seed": self.seed},
        )


@hookimpl
def cropseg_register_sources(register):
    register("sample", SampleSource)
