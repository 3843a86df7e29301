"""Subcommands of ``cropseg`` besides running experiments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .plugins import STAGES, Registry, get_plugin_manager
from .types import DWR_CROP_CLASSES


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


def predict_command(argv: Sequence[str]) -> int:
    """``cropseg predict MODEL_URI IMAGE``: apply a logged or registered model to a new scene."""
    import logging
    import sys

    from .errors import CropsegError
    from .parallel import ParallelConfig
    from .predict import DEFAULT_EXPERIMENT, predict

    parser = argparse.ArgumentParser(
        prog="cropseg predict",
        description="Apply a trained cropseg model to a new scene with its bands: mask GeoTIFF (on the scene's grid), "
        "crop segments GeoJSON, crop-area summary, and with --ground-truth a classification report. "
        "Recorded as an MLflow run linked to the model's training run.",
    )
    parser.add_argument("model_uri", help="runs:/<run_id>/model, models:/<name>/<version> or models:/<name>@<alias>")
    parser.add_argument(
        "image",
        nargs="+",
        help="the scene: a GeoTIFF with the model's bands (by default its training scene's layout, e.g. "
        "blue, green, red, NIR DN; see --bands); for a model trained on a time stack, one GeoTIFF per date "
        "in time order",
    )
    parser.add_argument(
        "--metadata",
        action="append",
        help="the scene's Planet metadata XML (DN -> TOA reflectance coefficients); a stack: once per date",
    )
    parser.add_argument("--scale", type=float, help="reflectance = DN * SCALE instead (overrides the model's setting)")
    parser.add_argument("--aoi", help="predict only inside this AOI (any vector file)")
    parser.add_argument(
        "--udm", action="append", help="usable-data raster (band 1 > 0 = clear); a stack: once per date"
    )
    parser.add_argument(
        "--dates",
        help="a stack's dates, comma-separated YYYY-MM-DD in time order (default: from the metadata XMLs or file names)",
    )
    parser.add_argument("--nodata", type=float, help="DN of missing pixels (default: as in training)")
    parser.add_argument(
        "--bands",
        help="the roles of the scene's bands in file order, comma-separated (e.g. blue,green,red,nir,swir1,swir2): "
        "the model's bands are taken by role (default: the same band layout as the training scene)",
    )
    parser.add_argument(
        "--ground-truth",
        help="ground truth for a classification report: a vector file (crop "
        "values of --attribute) or a class raster (.tif/.img/.vrt: crop "
        "pixel values; its nodata and --ignore-values are ignored)",
    )
    parser.add_argument("--attribute", default="CLASS1", help="ground-truth attribute holding the class (CLASS1)")
    parser.add_argument(
        "--crop-values",
        default=",".join(DWR_CROP_CLASSES),
        help="comma-separated crop values of --attribute, or crop pixel values of a class "
        "raster (default: %(default)s)",
    )
    parser.add_argument(
        "--ignore-values", default="", help="comma-separated class-raster pixel values to leave out of the scores"
    )
    parser.add_argument("--layer", help="layer of a multi-layer ground-truth file")
    parser.add_argument(
        "--uncovered",
        default="noncrop",
        choices=["noncrop", "ignore"],
        help="land no ground-truth polygon covers (default: %(default)s)",
    )
    parser.add_argument(
        "--reference-sample",
        help="labelled sample of this scene's mask (cropseg sample-design; "
        "'reference' 1 crop / 0 non-crop) for the error-adjusted area",
    )
    parser.add_argument("--labeler", help="labeler plugin for the ground truth (default: the model's)")
    parser.add_argument("--output-dir", help="where to write (default: outputs/predict/<date>/<time>-<id>)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="experiment of the prediction run (default: %(default)s)"
    )
    parser.add_argument("--run-name", help="name of the prediction run")
    parser.add_argument("--block-size", type=int, default=512, help="pixels per block side (default: %(default)s)")
    par = parser.add_mutually_exclusive_group()
    par.add_argument(
        "--serial",
        action="store_true",
        help="blocks one after another in this process (default: in parallel on an in-process Dask LocalCluster)",
    )
    par.add_argument("--scheduler", help="run blocks on the Dask cluster at this scheduler address (tcp://host:8786)")
    parser.add_argument("--workers", type=int, help="threads of the in-process LocalCluster (default: one per core)")
    args = parser.parse_args(list(argv))
    for noisy in ("alembic", "mlflow", "pyogrio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # progress to stderr for this command only (as Hydra's job logging does for runs); earlier handlers are
    # put back afterwards
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        parallel = ParallelConfig.from_config(
            {"backend": "dask", "scheduler": args.scheduler, "workers": args.workers}
            if not args.serial
            else {"backend": "serial"}
        )
        one = len(args.image) == 1
        result = predict(
            args.model_uri,
            args.image[0] if one else args.image,
            metadata=args.metadata[0] if one and args.metadata and len(args.metadata) == 1 else args.metadata,
            scale=args.scale,
            aoi=args.aoi,
            udm=args.udm[0] if one and args.udm and len(args.udm) == 1 else args.udm,
            dates=[d.strip() for d in args.dates.split(",") if d.strip()] if args.dates else None,
            nodata=args.nodata,
            bands=[b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None,
            ground_truth=args.ground_truth,
            attribute=args.attribute,
            crop_values=[v.strip() for v in args.crop_values.split(",") if v.strip()],
            layer=args.layer,
            ignore_values=_ints(args.ignore_values, "--ignore-values"),
            uncovered=args.uncovered,
            labeler=args.labeler,
            output_dir=args.output_dir,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            run_name=args.run_name,
            block=args.block_size,
            parallel=parallel,
            reference_sample=args.reference_sample,
        )
    except CropsegError as exc:
        print(f"cropseg: error: {exc}", file=sys.stderr)
        return 1
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])
    print()
    print(result.text())
    print(f"\nMLflow prediction run {result.run_id} FINISHED (experiment {result.experiment_name!r})")
    print(f"outputs: {result.output_dir}")
    return 0


def _ints(text: str, option: str) -> list[int]:
    from .errors import ConfigError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: comma-separated integers, got {text!r}") from None
