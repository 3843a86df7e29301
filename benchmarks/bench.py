"""cropseg benchmarks: side-by-side measurements in one run, printed as a Markdown table.

    .venv/bin/python benchmarks/bench.py            # the full run (10-15 minutes on 2 cores)
    .venv/bin/python benchmarks/bench.py --quick    # smaller scenes (a few minutes)
    .venv/bin/python benchmarks/bench.py --out benchmarks/results.md

Every scene is the bundled SYNTHETIC sample (``source=sample``), generated once into ``--workdir``
before anything is timed. Variants whose peak memory is reported run in a fresh Python process each;
the parent samples the resident memory of that process and all its children (e.g. Dask workers).
See benchmarks/README.md for what each section measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# --------------------------------------------------------------------------------------------------
# measuring a child process
# --------------------------------------------------------------------------------------------------


def run_child(args: list[str], workdir: Path, timeout: float = 1800) -> dict:
    """Run ``bench.py --child ...`` in a fresh interpreter; return its JSON result plus wall time and
    peak RSS (the child alone, and the sum over the child and its descendants, sampled every 50 ms)."""
    import psutil

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args, "--workdir", str(workdir)]
    out_path = workdir / f"child-{os.getpid()}-{time.monotonic_ns()}.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--result", str(out_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak_sum = peak_main = 0
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    rss.append(0)
            peak_main = max(peak_main, rss[0])
            peak_sum = max(peak_sum, sum(rss))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"benchmark child {args} failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out_path.read_text())
    out_path.unlink()
    res.update(wall_seconds=wall, peak_rss_mb=peak_main / 2**20, peak_rss_tree_mb=peak_sum / 2**20)
    return res


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------------
# children: each prints one JSON object to --result
# --------------------------------------------------------------------------------------------------


def _scenes(size: int, workdir: Path):
    from cropseg_plugins.sample import SampleSource

    return SampleSource(size=size).load(workdir / "cache" / "sample")


def child_generate(size: int, workdir: Path) -> dict:
    t = time.perf_counter()
    _scenes(size, workdir)
    return {"seconds": time.perf_counter() - t}


def child_cropseg(size: int, workdir: Path, extra: list[str]) -> dict:
    """cropseg's default pipeline, end to end (labels, sample, CV fit, predict test and train, filters,
    evaluation, polygons, previews, MLflow logging)."""
    import cropseg

    out = Path(tempfile.mkdtemp(dir=workdir, prefix=f"run{size}-"))
    t = time.perf_counter()
    res = cropseg.run(
        [
            f"source.size={size}",
            f"cache_dir={workdir / 'cache'}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            "tracking.experiment=benchmarks",
            *extra,
        ],
        output_dir=out,
    )
    secs = time.perf_counter() - t
    m = res.metrics
    pixels = m["predict_pixels"] + m["train_label_crop_pixels"] + m["train_label_noncrop_pixels"]
    return {
        "seconds": secs,
        "test_pixels": m["predict_pixels"],
        "weighted_f1": m["test_weighted_avg_f1"],
        "crop_f1": m["test_crop_f1"],
        "fit_seconds": m["fit_seconds"],
        "k": res.params.get("k"),
        "predict_seconds": m["predict_seconds"],
        "n_polygons": m.get("n_polygons"),
        "pixels": pixels,
    }


def child_seed(size: int, workdir: Path) -> dict:
    """The seed notebook's way, whole scenes in memory: DN -> TOA reflectance for the whole scene, OpenCV
    contour-filled labels, scikit-learn KNN with k tuned by 3-fold CV on *every* labelled pixel (default
    n_jobs), whole-image prediction, cv2.medianBlur(5), cv2.findContours polygons with areas -> GeoJSON."""
    import cv2
    import geopandas as gpd
    import rasterio
    import shapely
    from sklearn.metrics import classification_report
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    from cropseg.vector import ground_truth_for_grid

    scenes = _scenes(size, workdir)
    t = time.perf_counter()

    def load_scene(scene):
        with rasterio.open(scene.path) as src:
            dn = src.read()
        refl = dn.astype(np.float32) * np.asarray(scene.gains, dtype=np.float32)[:, None, None]
        valid = dn.any(axis=0)
        gdf = ground_truth_for_grid(scene.ground_truth, scene.grid)
        lab = np.zeros(valid.shape, dtype=np.uint8)
        inv = ~scene.grid.transform
        for poly in shapely.get_parts(gdf.geometry.values[gdf["crop"].to_numpy()]):
            if poly.geom_type != "Polygon":
                continue
            xy = np.asarray(poly.exterior.coords)
            cols, rows = inv @ (xy[:, 0], xy[:, 1])
            cv2.fillPoly(lab, [np.round(np.stack([cols - 0.5, rows - 0.5], axis=1)).astype(np.int32)], 1)
        return refl, valid, lab

    refl, valid, lab = load_scene(scenes.train)
    X, y = refl[:, valid].T, lab[valid]
    search = GridSearchCV(
        KNeighborsClassifier(),
        {"n_neighbors": list(range(3, 10))},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="f1_weighted",
    )
    search.fit(X, y)
    fit_s = time.perf_counter() - t
    n_train = len(y)
    del refl, X, y
    refl, valid, lab = load_scene(scenes.test)
    tp = time.perf_counter()
    pred = np.zeros(valid.shape, dtype=np.uint8)
    pred[valid] = search.best_estimator_.predict(refl[:, valid].T)
    predict_s = time.perf_counter() - tp
    pred = cv2.medianBlur(pred, 5)
    rep = classification_report(lab[valid], pred[valid], output_dict=True, zero_division=0)
    contours, hierarchy = cv2.findContours(pred, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    tr = scenes.test.grid.transform
    for i, c in enumerate(contours):
        if hierarchy[0][i][3] != -1 or len(c) < 3:
            continue
        holes = [contours[j] for j in range(len(contours)) if hierarchy[0][j][3] == i and len(contours[j]) >= 3]

        def ring(cc):
            px = cc[:, 0, :].astype(float) + 0.5
            return [tr * (cx, cy) for cx, cy in px]

        polys.append(shapely.Polygon(ring(c), [ring(h) for h in holes]))
    gdf = gpd.GeoDataFrame(geometry=polys, crs=scenes.test.grid.crs)
    gdf["area_ha"] = gdf.area / 1e4
    gdf.to_crs("EPSG:4326").to_file(workdir / f"seed-{size}.geojson", driver="GeoJSON")
    secs = time.perf_counter() - t
    return {
        "seconds": secs,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
        "k": search.best_params_["n_neighbors"],
        "weighted_f1": rep["weighted avg"]["f1-score"],
        "crop_f1": rep["1"]["f1-score"],
        "test_pixels": int(valid.sum()),
        "pixels": int(valid.sum()) + n_train,
        "n_polygons": len(gdf),
    }


def child_io(size: int, workdir: Path) -> dict:
    """The I/O floor: read every block of the test scene (4 bands, DN -> reflectance and valid mask, as
    the pipeline does) and write a uint8 mask of the same size, tiled and DEFLATE-compressed."""
    from cropseg.raster import block_writer, iter_windows

    scene = _scenes(size, workdir).test
    grid = scene.grid
    t = time.perf_counter()
    with scene.reader() as reader, block_writer(workdir / f"io-{size}.tif", grid) as dst:
        for w in iter_windows(grid.height, grid.width, 512):
            blk = reader.read(w)
            dst.write(
                np.where(blk.valid, (blk.reflectance[3] > blk.reflectance[2] * 2), 255).astype(np.uint8), 1, window=w
            )
    return {"seconds": time.perf_counter() - t, "pixels": grid.width * grid.height}


def _fitted(size: int, workdir: Path, name: str, overrides: list[str] = ()):
    """Scenes, test labels, the training sample and a classifier built from cropseg's config."""
    from cropseg.config import compose, instantiate
    from cropseg.pipeline import build_stages
    from cropseg.sampling import sample_training_pixels

    cfg = compose([f"classifier={name}", f"source.size={size}", *overrides])
    st = build_stages(cfg)
    scenes = st.source.load(workdir / "cache" / "sample")
    labels = {
        r: st.labeler.label(s, workdir / f"labels-{size}-{r}.tif")
        for r, s in (("train", scenes.train), ("test", scenes.test))
    }
    caps = {k: None if cfg.train.get(k) is None else int(cfg.train.get(k)) for k in ("max_pixels", "max_per_class")}
    ts = sample_training_pixels(
        scenes.train, labels["train"], st.features, **caps, seed=0, spatial_block=int(cfg.train.spatial_block)
    )
    clf = instantiate(st.registry, "classifier", cfg.classifier)
    return st, scenes, labels, ts, clf


def child_classifiers(size: int, workdir: Path) -> dict:
    """Every classifier in the registry: fit on the default training sample (cap per class), predict the
    test scene block by block (serial), weighted / crop F1 against the test labels. Plus the KNN reference
    side by side: its scikit-learn model's predict vs cropseg's, on the same pixels."""
    from cropseg.config import compose
    from cropseg.evaluate import classification_report as report
    from cropseg.evaluate import confusion_from_rasters
    from cropseg.pipeline import build_stages
    from cropseg.scene_ops import predict_scene

    names = build_stages(compose([])).registry.names("classifier")
    rows = []
    for name in names:
        try:  # a classifier's config: conf/classifier/<name>.yaml or one its plugin ships
            st, scenes, labels, ts, clf = _fitted(size, workdir, name)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            rows.append({"name": name, "skipped": f"no config: {str(exc).splitlines()[0][:80]}"})
            continue
        t = time.perf_counter()
        clf.fit(ts.X, ts.y, ts.groups)
        fit_s = time.perf_counter() - t
        mask = workdir / f"cls-{name}-{size}.tif"
        t = time.perf_counter()
        n_px, _ = predict_scene(scenes.test, st.features, clf, mask)
        pred_s = time.perf_counter() - t
        rep, _ = report(confusion_from_rasters(labels["test"].path, mask))
        rows.append(
            {
                "name": name,
                "fit_seconds": fit_s,
                "predict_seconds": pred_s,
                "pixels": n_px,
                "weighted_f1": rep["weighted avg"]["f1-score"],
                "crop_f1": rep["crop"]["f1-score"],
            }
        )
    return {"classifiers": rows}


def child_knn(size: int, workdir: Path, repeats: int = 3) -> dict:
    """The KNN reference side by side in a fresh process: the plugin's fitted model (k tuned by its
    default CV) predicting the test scene's pixels with scikit-learn's own ``KNeighborsClassifier.predict``
    and with the plugin's ``predict``, alternately ``repeats`` times each (median reported)."""
    from sklearn.neighbors import KNeighborsClassifier

    from cropseg.raster import iter_windows

    _st, scenes, _labels, ts, clf = _fitted(size, workdir, "knn")
    clf.fit(ts.X, ts.y, ts.groups)
    parts = []
    with scenes.test.reader() as r:
        for w in iter_windows(scenes.test.grid.height, scenes.test.grid.width, 512):
            b = r.read(w)
            parts.append(b.reflectance[:, b.valid].T)
    X = np.ascontiguousarray(np.concatenate(parts))
    clf.predict(X[:1000])  # the KD-trees are built once per fitted model (and the kernels compiled) first
    sk, ours = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ref = KNeighborsClassifier.predict(clf.model_, X)  # scikit-learn's own predict on the fitted model
        sk.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = clf.predict(X)
        ours.append(time.perf_counter() - t)
    return {
        "pixels": len(X),
        "sklearn_seconds": sk,
        "cropseg_seconds": ours,
        "k": int(clf.model_.n_neighbors),
        "agreement": float(np.mean(got == ref)),
        "n_train": int(len(clf.model_._y)),
        "n_jobs": clf.model_.n_jobs,
    }


def child_workers(size: int, workdir: Path) -> dict:
    """The prediction stage of the test scene with the serial executor, the default in-process Dask
    LocalCluster (threads) and LocalClusters of 1 and 2 single-threaded worker processes (cluster start-up
    timed apart)."""
    from cropseg.parallel import BlockExecutor, ParallelConfig, use_executor
    from cropseg.scene_ops import predict_scene

    st, scenes, labels, ts, clf = _fitted(size, workdir, "knn", ["classifier.k_grid=[9]"])
    clf.fit(ts.X, ts.y, ts.groups)
    out = {}
    ref = None
    cores = min(os.cpu_count() or 1, 8)
    for label, cfg in (
        ("serial", ParallelConfig(backend="serial")),
        (f"dask in-process, {cores} threads (default)", ParallelConfig(backend="dask")),
        ("dask, 1 worker process", ParallelConfig(backend="dask", workers=1, processes=True)),
        ("dask, 2 worker processes", ParallelConfig(backend="dask", workers=2, processes=True)),
    ):
        with BlockExecutor(cfg) as ex, use_executor(ex):
            t = time.perf_counter()
            if cfg.backend == "dask":
                ex.client.wait_for_workers(cfg.workers if cfg.processes else 1)
            start_s = time.perf_counter() - t
            mask = workdir / f"workers-{label.replace(' ', '').replace(',', '')}.tif"
            t = time.perf_counter()
            predict_scene(scenes.test, st.features, clf, mask)  # first pass: workers import and build the tree
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            n_px, _ = predict_scene(scenes.test, st.features, clf, mask)
            secs = time.perf_counter() - t
        import rasterio

        with rasterio.open(mask) as src:
            arr = src.read(1)
        same = True if ref is None else bool(np.array_equal(arr, ref))
        ref = arr if ref is None else ref
        out[label] = {
            "seconds": secs,
            "first_seconds": first_s,
            "start_seconds": start_s,
            "pixels": n_px,
            "identical": same,
        }
    return {"executors": out}


CHILDREN = {
    "generate": child_generate,
    "cropseg": child_cropseg,
    "seed": child_seed,
    "io": child_io,
    "classifiers": child_classifiers,
    "workers": child_workers,
    "knn": child_knn,
}


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------


def fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller scenes (500, 1000, 2000 px): a few minutes")
    ap.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    ap.add_argument("--workdir", type=Path, help="scene cache and outputs (default: a temporary directory)")
    ap.add_argument("--sections", default="1,2,3,4,5", help="comma-separated sections to run (default all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        fn = CHILDREN[args.child]
        extra = [e for e in args.extra.split(";") if e]
        res = fn(args.size, args.workdir, extra) if args.child == "cropseg" else fn(args.size, args.workdir)
        args.result.write_text(json.dumps(res))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cropseg-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sections = {int(s) for s in args.sections.split(",") if s.strip()}
    base = 500 if args.quick else 1000
    sizes = [base, 2 * base, 4 * base]
    started = time.perf_counter()
    lines: list[str] = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    import sklearn

    import cropseg

    emit(f"# cropseg benchmarks{' (--quick)' if args.quick else ''}")
    emit()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    emit(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {mem:.1f} GiB, {platform.platform()}; "
        f"Python {platform.python_version()}, cropseg {cropseg.__version__}, scikit-learn {sklearn.__version__}. "
        f"Load average (1/5/15 min) at start: {load()}."
    )
    emit(f"Scenes: the bundled SYNTHETIC sample, {base}x{base} px unless said otherwise (train + test scene).")
    emit()
    generated = {
        size: run_child(["generate", "--size", str(size)], workdir)
        for size in sorted(set(sizes if 2 in sections else [base]))
    }

    default_runs: dict[int, dict] = {}

    def cropseg_run(size: int) -> dict:
        if size not in default_runs:
            default_runs[size] = run_child(["cropseg", "--size", str(size)], workdir)
        return default_runs[size]

    if 1 in sections:
        seed = run_child(["seed", "--size", str(base)], workdir)
        ours = cropseg_run(base)
        emit(f"## 1. Seed-style baseline vs cropseg's default KNN pipeline ({base}x{base}, load {load()})")
        emit()
        emit(
            "| variant | wall s | fit s | test predict s | pixels/s (end to end) | peak RSS MB (tree) | weighted F1 | crop F1 | k |"
        )
        emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in (("seed-style (whole scene, KNN on all labelled pixels)", seed), ("cropseg default", ours)):
            emit(
                f"| {name} | {fmt(r['wall_seconds'])} | {fmt(r['fit_seconds'])} | {fmt(r['predict_seconds'])} | "
                f"{fmt(r['pixels'] / r['wall_seconds'], 0)} | {fmt(r['peak_rss_tree_mb'], 0)} | "
                f"{r['weighted_f1']:.4f} | {r['crop_f1']:.4f} | {r['k']} |"
            )
        emit(
            f"| **ratio seed / cropseg** | **{seed['wall_seconds'] / ours['wall_seconds']:.2f}x** | "
            f"{seed['fit_seconds'] / ours['fit_seconds']:.2f}x | {seed['predict_seconds'] / ours['predict_seconds']:.2f}x | "
            f"cropseg {(ours['pixels'] / ours['wall_seconds']) / (seed['pixels'] / seed['wall_seconds']):.2f}x | "
            f"{seed['peak_rss_tree_mb'] / ours['peak_rss_tree_mb']:.2f}x | | | |"
        )
        emit()
        emit(
            "Pixels/s counts the pixels each variant classifies or trains on (test scene + labelled training "
            "pixels) over the whole wall time, interpreter start-up and imports included. cropseg's run also "
            "predicts and scores the training scene, writes previews, polygons and MLflow records."
        )
        emit()

    if 2 in sections:
        runs = {s: cropseg_run(s) for s in sizes}
        b = runs[sizes[0]]
        emit(f"## 2. Scaling: cropseg default at 1x, 4x, 16x pixels (load {load()})")
        emit()
        emit(
            "| scene | pixels (x) | wall s | wall / 1x | CV fit s | wall - fit s | (wall - fit) / 1x | peak RSS MB | RSS / 1x | "
            "generating the scenes: peak RSS MB | weighted F1 |"
        )
        emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        b_rest = b["wall_seconds"] - b["fit_seconds"]
        for s, r in runs.items():
            rest = r["wall_seconds"] - r["fit_seconds"]
            emit(
                f"| {s}x{s} | {(s / sizes[0]) ** 2:.0f}x | {fmt(r['wall_seconds'])} | {r['wall_seconds'] / b['wall_seconds']:.2f} | "
                f"{fmt(r['fit_seconds'])} | {fmt(rest)} | {rest / b_rest:.2f} | {fmt(r['peak_rss_tree_mb'], 0)} | "
                f"{r['peak_rss_tree_mb'] / b['peak_rss_tree_mb']:.2f} | {fmt(generated[s]['peak_rss_tree_mb'], 0)} | "
                f"{r['weighted_f1']:.4f} |"
            )
        emit()
        emit(
            "Peak RSS is that of the run's process and its children (the default `parallel.backend=serial` "
            "starts none). The training sample is capped at `train.max_pixels` pixels in all, so the "
            "k-tuning CV fit takes about the same time at every size; everything else (labels, sampling pass, "
            "prediction of both scenes, filters, evaluation, polygons) grows with the pixels. Generating the "
            "synthetic scenes happens once per size, before the timed runs."
        )
        emit()
        # spatial models: context features read blocks with a halo (max radius), the U-Net predicts fixed tiles
        # with a halo and trains on a capped number of patches; memory must stay bounded for both.
        # hist_gradient_boosting keeps the 16x context run short (the features' memory is the question here)
        for label, extra in (
            ("features=context", "features=context;classifier=hist_gradient_boosting"),
            ("classifier=unet", "classifier=unet"),
        ):
            spatial = {
                sz: run_child(["cropseg", "--size", str(sz), "--extra", extra], workdir) for sz in (sizes[0], sizes[-1])
            }
            c1 = spatial[sizes[0]]
            emit(f"`{extra.replace(';', ' ')}` (default options), 1x and 16x (load {load()}):")
            emit()
            emit("| scene | pixels (x) | wall s | wall / 1x | fit s | peak RSS MB | RSS / 1x | crop F1 |")
            emit("|---|---:|---:|---:|---:|---:|---:|---:|")
            for s, r in spatial.items():
                emit(
                    f"| {s}x{s} {label} | {(s / sizes[0]) ** 2:.0f}x | {fmt(r['wall_seconds'])} | "
                    f"{r['wall_seconds'] / c1['wall_seconds']:.2f} | {fmt(r['fit_seconds'])} | "
                    f"{fmt(r['peak_rss_tree_mb'], 0)} | {r['peak_rss_tree_mb'] / c1['peak_rss_tree_mb']:.2f} | "
                    f"{r['crop_f1']:.4f} |"
                )
            emit()

    if 3 in sections:
        size = sizes[-1] if 2 in sections else base
        io = run_child(["io", "--size", str(size)], workdir)
        whole = cropseg_run(size)
        emit(f"## 3. The I/O floor ({size}x{size}, load {load()})")
        emit()
        emit("| step | seconds | share of the whole run |")
        emit("|---|---:|---:|")
        emit(
            f"| read the test scene block by block + write a same-size uint8 mask (rasterio) | {fmt(io['seconds'], 2)} | "
            f"{io['seconds'] / whole['wall_seconds']:.1%} |"
        )
        emit(
            f"| cropseg: classifier time predicting the test scene | {fmt(whole['predict_seconds'], 2)} | "
            f"{whole['predict_seconds'] / whole['wall_seconds']:.1%} |"
        )
        emit(f"| cropseg default run, end to end | {fmt(whole['wall_seconds'], 1)} | 100% |")
        emit()
        emit(
            "A run reads each scene several times (labels, sample, prediction) and writes raw and filtered "
            "masks for both scenes: the floor times roughly 4 is what disk and codec alone would cost."
        )
        emit()

    if 4 in sections:
        wsize = sizes[1]
        if 2 not in sections:
            run_child(["generate", "--size", str(wsize)], workdir)
        w = run_child(["workers", "--size", str(wsize)], workdir)
        emit(
            f"## 4. Prediction stage: serial vs Dask workers ({wsize}x{wsize} test scene, "
            f"{(-(-wsize // 512)) ** 2} blocks, KNN k=9, load {load()})"
        )
        emit()
        emit(
            "| executor | cluster start s | first pass s | predict s (warm) | pixels/s (warm) | speed-up vs serial | mask identical to serial |"
        )
        emit("|---|---:|---:|---:|---:|---:|---|")
        ex = w["executors"]
        one = ex["serial"]["seconds"]
        for label, r in ex.items():
            emit(
                f"| {label} | {fmt(r['start_seconds'], 1)} | {fmt(r['first_seconds'], 2)} | {fmt(r['seconds'], 2)} | "
                f"{fmt(r['pixels'] / r['seconds'], 0)} | {one / r['seconds']:.2f}x | {'yes' if r['identical'] else 'NO'} |"
            )
        emit()
        emit(
            "Serial runs one block at a time and gives it every core (the KNN kernel's threads); on Dask each "
            "worker thread runs one block at a time, single-threaded. The first pass includes worker processes "
            "importing cropseg and building the KD-trees; the warm pass is the steady state."
        )
        emit()

    if 5 in sections:
        c = run_child(["classifiers", "--size", str(base)], workdir)
        emit(f"## 5. Every registered classifier ({base}x{base}, default options, load {load()})")
        emit()
        emit(
            "| classifier | fit s | predict pixels/s (test scene, serial) | weighted F1 (raw mask) | crop F1 (raw mask) |"
        )
        emit("|---|---:|---:|---:|---:|")
        for r in c["classifiers"]:
            if "skipped" in r:
                emit(f"| {r['name']} | skipped: {r['skipped']} | | | |")
                continue
            emit(
                f"| {r['name']} | {fmt(r['fit_seconds'], 1)} | {fmt(r['pixels'] / r['predict_seconds'], 0)} | "
                f"{r['weighted_f1']:.4f} | {r['crop_f1']:.4f} |"
            )
        emit()
        s = run_child(["knn", "--size", str(base)], workdir)
        sk, cs = float(np.median(s["sklearn_seconds"])), float(np.median(s["cropseg_seconds"]))
        emit(
            f"KNN reference, side by side in one fresh process on the same {s['pixels']:,} test pixels "
            f"(k={s['k']}, {s['n_train']:,} training pixels; median of {len(s['sklearn_seconds'])} alternating "
            f"repeats each, load {load()}):"
        )
        emit()
        emit("| predict | seconds (median) | each repeat | pixels/s | ratio |")
        emit("|---|---:|---|---:|---:|")
        emit(
            f"| scikit-learn KNeighborsClassifier.predict (n_jobs={s['n_jobs']}) | {fmt(sk, 2)} | "
            f"{', '.join(fmt(x, 2) for x in s['sklearn_seconds'])} | {fmt(s['pixels'] / sk, 0)} | 1.00x |"
        )
        emit(
            f"| cropseg `knn` plugin predict | {fmt(cs, 2)} | {', '.join(fmt(x, 2) for x in s['cropseg_seconds'])} | "
            f"{fmt(s['pixels'] / cs, 0)} | **{sk / cs:.2f}x** |"
        )
        emit()
        emit(f"Agreement with scikit-learn (last repeat): {s['agreement']:.6%} of pixels.")
        emit()

    emit(f"Total benchmark time {time.perf_counter() - started:.0f} s; load average at the end: {load()}.")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
