"""Source ``sample`` (the default): a SYNTHETIC PSScene-like train scene and test scene near Sacramento.

Generated deterministically from ``seed`` by :mod:`cropseg_plugins.sample.synth` into the cache directory
once (analytic GeoTIFF, Planet-schema metadata XML, DWR-style ground truth GeoJSON) and reused; the
scenes then go through the same code as real ones: reflectance from the XML coefficients, ground truth
from the GeoJSON.

``preset``: ``default`` (nearly separable by a pixel's own bands) or ``hard``, the failure modes of real
scene pairs (:data:`HARD`, :class:`~cropseg_plugins.sample.synth.Difficulty`): a train scene with 45 % crop
and a test scene with 25 %, crop-like green grass and shrubs (non-crop) that differ from crop only in
texture and context, a brightness / season offset of the test scene (acquired later in the summer), and
label noise in the survey.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.planet_metadata import parse_metadata
from cropseg.types import Scene, SceneSet, VectorGroundTruth

from .synth import Difficulty

#: bump when the generator changes so caches are not reused across versions
GENERATOR_VERSION = 1
#: largest side of a synthetic scene in pixels
MAX_SIDE = 20000
# (role, seed offset, top-left UTM 10N easting/northing, acquisition) - the test scene lies ~15 km east
SCENES = (
    ("train", 0, 626000.0, 4243000.0, datetime(2017, 6, 1, 18, 4, 25, tzinfo=timezone.utc)),
    ("test", 1, 641000.0, 4241000.0, datetime(2017, 6, 1, 18, 4, 27, tzinfo=timezone.utc)),
)
PRESETS = ("default", "hard")
#: bump when the hard preset changes (the default scenes are versioned by GENERATOR_VERSION alone)
HARD_VERSION = 1
#: the hard preset, per role: (seed offset, acquisition, difficulty); the test scene is acquired ~12 weeks
#: later (brighter visible bands, less near-IR)
HARD = {
    "train": (2, datetime(2017, 6, 1, 18, 4, 25, tzinfo=timezone.utc), Difficulty(crop_share=0.45)),
    "test": (
        3,
        datetime(2017, 8, 24, 18, 10, 3, tzinfo=timezone.utc),
        Difficulty(crop_share=0.25, band_gain=(1.08, 1.06, 1.12, 0.86)),
    ),
}


class SampleSource:
    synthetic = True

    def __init__(self, size: int | list[int] = 1000, seed: int = 42, preset: str = "default"):
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
        if preset not in PRESETS:
            raise ConfigError(f"source.preset={preset!r}: one of {', '.join(PRESETS)}")
        self.height, self.width, self.seed, self.preset = int(h), int(w), int(seed), preset

    def _folder(self, workdir: Path) -> Path:
        hard = f"-hard{HARD_VERSION}" if self.preset == "hard" else ""
        return Path(workdir) / f"v{GENERATOR_VERSION}{hard}-seed{self.seed}-{self.width}x{self.height}"

    def check(self, workdir: Path) -> None:
        """Before a run starts: the scenes not yet generated fit on the cache's disk (uncompressed estimate)."""
        import shutil

        folder = self._folder(workdir)
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

        folder = self._folder(workdir)
        scenes = {}
        for role, offset, left, top, acquired in SCENES:
            difficulty = None
            if self.preset == "hard":
                offset, acquired, difficulty = HARD[role]
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
                    "generating the SYNTHETIC %s scene (%dx%d px%s) into %s",
                    role,
                    self.width,
                    self.height,
                    ", hard preset" if difficulty else "",
                    folder,
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
                    difficulty=difficulty,
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
                    "preset": self.preset,
                },
            )
        return SceneSet(
            train=scenes["train"],
            test=scenes["test"],
            synthetic=True,
            metadata={"generator_version": GENERATOR_VERSION, "seed": self.seed, "preset": self.preset},
        )


@hookimpl
def cropseg_register_sources(register):
    register("sample", SampleSource)
