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

``dates=N`` (2 or more) generates instead the SYNTHETIC multi-date sample of
:mod:`cropseg_plugins.sample.multidate`: each scene is a time stack of N acquisitions over one growing
season (phenology curves of several crop types, grassland / fallow / shrub that no single date separates
from crop, clouds with udm2 masks on some dates). ``dates=1`` (the default) is the single-date sample.
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
#: most dates of the multi-date sample
MAX_DATES = 24
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

    def __init__(
        self,
        size: int | list[int] = 1000,
        seed: int = 42,
        preset: str = "default",
        dates: int = 1,
        use_date: int | None = None,
    ):
        if not 1 <= int(dates) <= MAX_DATES:
            raise ConfigError(f"source.dates: 1 (single-date sample) to {MAX_DATES} dates, got {dates!r}")
        if use_date is not None and not (dates > 1 and 0 <= int(use_date) < int(dates)):
            raise ConfigError(
                f"source.use_date: the index (0..{int(dates) - 1}) of one date of the multi-date sample "
                f"(source.dates >= 2), got {use_date!r} with source.dates={dates}"
            )
        if preset != "default" and int(dates) > 1:
            raise ConfigError(
                f"source.preset={preset}: the presets shape the single-date sample; the multi-date sample "
                f"(source.dates={dates}) has its own difficulties"
            )
        self.dates = int(dates)
        self.use_date = None if use_date is None else int(use_date)
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

    def check(self, workdir: Path) -> None:
        """Before a run starts: the scenes not yet generated fit on the cache's disk (uncompressed estimate)."""
        import shutil

        folder = self._folder(workdir)
        if folder.is_dir() and len(list(folder.glob("*_AnalyticMS.tif"))) >= len(SCENES) * self.dates:
            return
        # 4 bands of uint16 (+ 8 udm2 bands of uint8 per date of a multi-date sample)
        need = len(SCENES) * self.width * self.height * (8 if self.dates == 1 else 16 * self.dates)
        free = shutil.disk_usage(Path(workdir) if Path(workdir).exists() else Path(workdir).parent).free
        if need > free:
            raise ConfigError(
                f"source.size={self.width}x{self.height}: the two synthetic scenes need up to "
                f"{need / 2**30:.1f} GiB in {workdir}, only {free / 2**30:.1f} GiB free"
            )

    def _folder(self, workdir: Path) -> Path:
        if self.dates > 1:
            from .multidate import MULTIDATE_VERSION

            name = f"md{MULTIDATE_VERSION}-{self.dates}dates-seed{self.seed}-{self.width}x{self.height}"
            return Path(workdir) / name
        hard = f"-hard{HARD_VERSION}" if self.preset == "hard" else ""
        return Path(workdir) / f"v{GENERATOR_VERSION}{hard}-seed{self.seed}-{self.width}x{self.height}"

    def load(self, workdir: Path) -> SceneSet:
        import logging

        from .synth import SyntheticScene, generate_scene

        if self.dates > 1:
            return self._load_stacks(workdir)
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

    def _load_stacks(self, workdir: Path) -> SceneSet:
        import logging

        from cropseg.scenes import build_stack
        from cropseg.types import Acquisition

        from .multidate import MULTIDATE_VERSION, generate_stack

        folder = self._folder(workdir)
        scenes = {}
        for role, offset, left, top, _ in SCENES:
            seed = self.seed * 10 + offset
            logging.getLogger("cropseg").info(
                "the SYNTHETIC multi-date %s scene (%d dates, %dx%d px) in %s",
                role,
                self.dates,
                self.width,
                self.height,
                folder,
            )
            files, gt = generate_stack(
                folder,
                role=role,
                seed=seed,
                n_dates=self.dates,
                width=self.width,
                height=self.height,
                left=left,
                top=top,
            )
            acqs = []
            for f in files:
                meta = parse_metadata(f.metadata_xml)
                acqs.append(
                    Acquisition(
                        date=f.date.isoformat(),
                        path=f.analytic,
                        gains=meta.gains(4),
                        offsets=(0.0,) * 4,
                        nodata=0,
                        usable_path=f.udm2,
                        metadata={
                            "scene_id": meta.scene_id,
                            "acquired": meta.acquired.isoformat() if meta.acquired else None,
                        },
                    )
                )
            if self.use_date is not None:  # one date of the stack, as a single-image scene
                a = acqs[self.use_date]
                scenes[role] = Scene(
                    name=role,
                    path=a.path,
                    gains=a.gains,
                    nodata=0,
                    usable_path=a.usable_path,
                    ground_truth=VectorGroundTruth(gt),
                    metadata={**a.metadata, "synthetic": True, "reflectance": "toa_xml", "dates": [a.date]},
                )
                continue
            scenes[role] = build_stack(
                role,
                acqs,
                ground_truth=VectorGroundTruth(gt),
                metadata={
                    "scene_id": acqs[0].metadata["scene_id"],
                    "acquired": acqs[0].metadata["acquired"],
                    "synthetic": True,
                    "reflectance": "toa_xml",
                },
                option="dates",
            )
        return SceneSet(
            train=scenes["train"],
            test=scenes["test"],
            synthetic=True,
            metadata={
                "generator_version": f"multidate-{MULTIDATE_VERSION}",
                "seed": self.seed,
                "dates": self.dates,
                "use_date": self.use_date,
            },
        )


@hookimpl
def cropseg_register_sources(register):
    register("sample", SampleSource)
