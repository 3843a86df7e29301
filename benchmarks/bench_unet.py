"""The U-Net against its own ceiling: the bare network's speed on this machine beside cropseg's.

One run measures, on the bundled SYNTHETIC sample (``source=sample``, ``--size`` px scenes):

* **prediction**: the bare forward pass of the network cropseg builds (``classifier=unet`` and the given
  overrides: same architecture, tile + halo input, dtype, AMP / channels-last setting) on one tile, with one
  thread and with every core (one PyTorch call with all threads, and one single-threaded call per core on
  as many Python threads at once; the faster is the all-cores ceiling), against cropseg predicting the test
  scene (``scene_ops.predict_scene`` on the run's default block executor: reading, features, tiles, writing
  the mask). Useful pixels per second: a tile's ``tile_size``² per forward pass; for cropseg, the pixels of
  the tiles it predicted (tiles wholly outside the scene's footprint are skipped) over the wall time.
* **training**: the bare loop (forward + backward + Adam step over the same normalised training patches
  and batch size, nothing else) with one thread and with every core, against one epoch of cropseg's
  ``fit_patches`` (shuffling, augmentation, batches prepared on a thread, batch-norm re-estimation,
  validation prediction; the second of two epochs, warm), at the model's ``threads`` setting (``auto``:
  its choice, made in epoch 1, is reported) and at ``--threads``.
* **batch** (``--sections batch``, not in the default): validation crop F1 per epoch and fit time for
  each ``--batch-sizes`` and ``--seeds`` (judge it on ``source.preset=hard``).
* **runtimes** (``--sections runtimes``, not in the default): one real test tile through PyTorch eager
  (cropseg's path), ``torch.compile`` and ONNX Runtime (if ``onnx`` and ``onnxruntime`` are installed),
  one thread, with their agreement.

Prints a Markdown report (``--out``) and writes the numbers as JSON (``--json``). ``--device cuda`` (or
``auto``) measures on a GPU; the CPU thread variants are then replaced by the device. Timings on a shared
machine are noisy: the variants of a section run in turn (a warm-up each, then ``--repeats`` rounds;
medians reported), so a change of load hits them alike, and the load average is printed.

    .venv/bin/python benchmarks/bench_unet.py                       # 2000x2000 scenes, CPU
    .venv/bin/python benchmarks/bench_unet.py --size 1000 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def build(size: int, workdir: Path, overrides: list[str]):
    """Scenes, labels, the training / validation patches cropseg draws and a UNet built from the config."""
    from cropseg.config import compose, instantiate
    from cropseg.patches import PatchOptions, draw_patches
    from cropseg.pipeline import build_stages

    cfg = compose(["classifier=unet", f"source.size={size}", *overrides])
    st = build_stages(cfg)
    scenes = st.source.load(workdir / "cache" / "sample")
    labels = st.labeler.label(scenes.train, workdir / f"labels-{size}-train.tif")
    sample = draw_patches(
        scenes.train,
        labels,
        st.features,
        int(cfg.classifier.patch_size),
        PatchOptions.from_config(cfg.train.get("patches")),
        seed=0,
        spatial_block=int(cfg.train.spatial_block),
    )
    from omegaconf import OmegaConf

    def make(**kw):
        return instantiate(st.registry, "classifier", OmegaConf.merge(cfg.classifier, OmegaConf.create(kw)))

    return cfg, st, scenes, sample, make


def _amp(model, dev) -> bool:
    """The model's AMP setting on ``dev`` (False for versions without the option: a before/after run)."""
    return bool(getattr(model, "_amp", lambda d: False)(dev))


def _channels_last(model, dev) -> bool:
    return bool(getattr(model, "_channels_last", lambda d: False)(dev))


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(int(n))


def alternate(variants: dict, repeats: int) -> dict[str, dict]:
    """Run every variant once to warm it up, then all of them in turn, ``repeats`` rounds, so that a change
    of load on a shared machine hits them alike. A variant returns its own seconds, or None to be timed
    here. Returns ``{name: {"seconds": median, "each": [...]}}``."""
    for fn in variants.values():
        fn()
    each: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t = time.perf_counter()
            r = fn()
            each[k].append(float(r) if r is not None else time.perf_counter() - t)
    return {k: {"seconds": float(np.median(v)), "each": v} for k, v in each.items()}


def bench_training(model, sample, threads_list: list[int | str | None], repeats: int) -> dict:
    """Bare forward + backward + step over the patches vs cropseg's epoch, alternating."""
    import torch

    from cropseg.patches import epoch_callback

    X = sample.train.X
    mean = X.mean(axis=(0, 2, 3)).astype(np.float32)
    std = (X.std(axis=(0, 2, 3)) + 1e-6).astype(np.float32)
    dev = model._device()
    amp, cl = _amp(model, dev), _channels_last(model, dev)
    xt = torch.from_numpy(((X - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)).to(dev)
    yt = torch.from_numpy(sample.train.y).to(dev)
    if cl:
        xt = xt.contiguous(memory_format=torch.channels_last)
    bs = int(model.batch_size)
    cores = os.cpu_count() or 1
    out: dict = {"patches": len(X), "patch_size": int(X.shape[-1]), "batch_size": bs, "device": str(dev), "amp": amp}

    def bare_epoch(net, opt, threads: int) -> None:
        if dev.type != "cuda":
            set_threads(threads)
        net.train()
        for s in range(0, len(xt), bs):
            xb, yb = xt[s : s + bs], yt[s : s + bs]
            keep = yb != 255
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(xb)[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float()[keep], (yb[keep] == 1).float(), reduction="mean"
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def noop(metrics, step) -> None:
        pass

    chosen: dict[str, list[str]] = {}

    def cropseg_epoch(threads: int | str | None) -> float:
        """The second epoch of a two-epoch fit_patches (warm, as the bare loop's network is), from the end
        of epoch 1 to the end of epoch 2 as its epoch callback sees them (validation included). With
        threads=auto the thread count is chosen in epoch 1 (its probe is not in the figure)."""
        if dev.type != "cuda" and threads != "auto":
            set_threads(threads or cores)
        m = model.__class__.__new__(model.__class__)
        m.__dict__.update(model.__dict__)
        m.threads, m.epochs, m.patience, m.class_weight, m.max_minutes = threads, 2, None, None, None
        score = epoch_callback(sample.validation, noop, "bench")
        ends: list[float] = []

        def on_epoch(epoch, loss, val_pred):
            metrics = score(epoch, loss, val_pred)
            ends.append(time.perf_counter())
            return metrics

        res = m.fit_patches(sample.train, sample.validation, on_epoch)
        if "train_threads" in res.tags:
            chosen.setdefault(str(threads), []).append(res.tags["train_threads"])
        return ends[1] - ends[0]

    variants: dict = {}
    for threads in threads_list:
        if threads == "auto" and dev.type != "cuda":
            continue  # the bare loop runs a fixed thread count
        key = "device" if dev.type == "cuda" else f"threads={threads or cores}"
        net = model._build(int(X.shape[1])).to(dev)
        if cl:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        variants[f"bare {key}"] = lambda net=net, opt=opt, n=threads or cores: bare_epoch(net, opt, n)
    for threads in threads_list:
        key = "device" if dev.type == "cuda" else f"threads={threads or cores}"
        variants[f"cropseg {key}"] = lambda n=threads: cropseg_epoch(n)
    for k, v in alternate(variants, repeats).items():
        out[k] = {**v, "patches_per_second": len(X) / v["seconds"]}
    if chosen:
        out["threads_auto"] = chosen.get("auto", [])
    return out


def bench_prediction(model, scenes, st, workdir: Path, repeats: int) -> dict:
    """Bare forward pass on one tile + halo vs cropseg predicting the test scene, alternating."""
    import torch
    from rasterio.windows import Window

    from cropseg.parallel import BlockExecutor, ParallelConfig, use_executor
    from cropseg.scene_ops import predict_scene

    tile, halo = int(getattr(model, "tile_size", 0) or 512), int(model.halo)
    side = tile + 2 * halo
    dev = model._device()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, model.n_features, side, side)).astype(np.float32)
    out: dict = {"tile": tile, "halo": halo, "device": str(dev), "amp": _amp(model, dev)}
    model._ready()
    cores = os.cpu_count() or 1
    # the pixels of the tiles cropseg predicts: every tile with a valid pixel, clipped to the scene
    grid = scenes.test.grid
    tile_px = 0
    with scenes.test.reader() as reader:
        for r in range(0, grid.height, tile):
            for c in range(0, grid.width, tile):
                h, w = min(tile, grid.height - r), min(tile, grid.width - c)
                if reader.read(Window(c, r, w, h)).valid.any():
                    tile_px += h * w
    out["scene"] = f"{grid.width}x{grid.height}"
    out["tile_pixels"] = tile_px

    def forward(threads: int) -> None:
        if dev.type != "cuda":
            set_threads(threads)
        model._logits(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def concurrent() -> None:
        def work() -> None:
            torch.set_num_threads(1)  # per OpenMP thread: each Python thread sets its own
            model._logits(x)

        ts = [threading.Thread(target=work) for _ in range(cores)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    variants: dict = {}
    pixels: dict[str, float] = {}
    if dev.type == "cuda":
        variants["bare device"] = lambda: forward(1)
        pixels["bare device"] = tile * tile
    else:
        for threads in sorted({1, cores}):
            variants[f"bare threads={threads}"] = lambda n=threads: forward(n)
            pixels[f"bare threads={threads}"] = tile * tile
        if cores > 1:
            variants[f"bare {cores} x 1 thread"] = concurrent
            pixels[f"bare {cores} x 1 thread"] = cores * tile * tile
    executors = {"dask (default)": BlockExecutor(ParallelConfig(backend="dask"))}
    if dev.type != "cuda":
        executors["serial"] = BlockExecutor(ParallelConfig(backend="serial"))
    try:
        for label, ex in executors.items():

            def run(ex: BlockExecutor = ex, mask: Path = workdir / f"predict-{label.split()[0]}.tif") -> None:
                with use_executor(ex):
                    predict_scene(scenes.test, st.features, model, mask)

            variants[f"cropseg {label}"] = run
            pixels[f"cropseg {label}"] = tile_px
        for k, v in alternate(variants, repeats).items():
            out[k] = {**v, "pixels_per_second": pixels[k] / v["seconds"]}
    finally:
        for ex in executors.values():
            ex.close()
    return out


def bench_runtimes(model, scenes, st, workdir: Path, repeats: int) -> dict:
    """The forward pass of one real test tile + halo (the scene's first tile, the fitted quick model) with one
    thread, as each block task runs it: PyTorch eager (cropseg's path) against ``torch.compile`` (inductor;
    compile time reported apart) and ONNX Runtime (exported with ``torch.onnx.export``; needs ``onnx`` and
    ``onnxruntime``, which cropseg does not install). Agreement with eager: the largest logit difference
    and the share of the tile's pixels on the same side of 0 (the mask)."""
    import torch
    from rasterio.windows import Window

    from cropseg.featurize import block_features

    tile, halo = int(getattr(model, "tile_size", 0) or 512), int(model.halo)
    side = tile + 2 * halo
    with scenes.test.reader() as reader:
        blk = reader.read(Window(-halo, -halo, side, side))
    x = model._normalise(block_features(st.features, blk, scenes.test.band_names)[None].astype(np.float32))
    net = model._ready()
    set_threads(1)
    out: dict = {"tile": tile, "halo": halo, "threads": 1}
    ref = model._logits(x)
    xt = torch.from_numpy(x)

    def eager() -> None:
        model._logits(x)

    fns: dict = {"eager (cropseg)": eager}
    results: dict = {}
    try:
        t = time.perf_counter()
        compiled = torch.compile(net)
        with torch.inference_mode():
            results["torch.compile"] = compiled(xt)[:, 0].numpy()
        out["compile_seconds"] = time.perf_counter() - t

        def run_compiled() -> None:
            with torch.inference_mode():
                compiled(xt)

        fns["torch.compile"] = run_compiled
    except Exception as exc:  # noqa: BLE001 - inductor fails in many ways without a compiler
        out["compile_error"] = " ".join(str(exc).split())[:300]
    try:
        import onnxruntime as ort

        t = time.perf_counter()
        path = workdir / "unet.onnx"
        torch.onnx.export(net, (xt,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        results["onnxruntime"] = sess.run(None, {"x": x})[0][:, 0]
        out["onnx_export_seconds"] = time.perf_counter() - t
        out["onnxruntime_version"] = ort.__version__

        def run_onnx() -> None:
            sess.run(None, {"x": x})

        fns["onnxruntime"] = run_onnx
    except Exception as exc:  # noqa: BLE001 - not installed, or the export failed
        out["onnx_error"] = " ".join(str(exc).split())[:300]
    for k, v in results.items():
        out[f"{k} agreement"] = {
            "max_abs_logit_diff": float(np.abs(v - ref).max()),
            "same_mask_share": float(np.mean((v > 0) == (ref > 0))),
        }
    for k, v in alternate(fns, repeats).items():
        out[k] = {**v, "pixels_per_second": tile * tile / v["seconds"]}
    return out


def bench_batch_sizes(make, sample, batch_sizes: list[int], seeds: list[int], epochs: int = 5) -> dict:
    """Validation crop F1 per epoch and fit seconds for each batch size and seed: ``epochs`` epochs, no
    early stopping, no class weights, the model's ``threads`` setting."""
    from cropseg.patches import epoch_callback

    out: dict = {"epochs": epochs, "runs": {}}
    for seed in seeds:
        for bs in batch_sizes:
            m = make(batch_size=bs, epochs=epochs, patience=None, class_weight=None, seed=seed)
            curve: list[float] = []
            cb = epoch_callback(
                sample.validation, lambda metrics, step, curve=curve: curve.append(metrics["val_crop_f1"]), "bs"
            )
            t = time.perf_counter()
            m.fit_patches(sample.train, sample.validation, cb)
            out["runs"][f"{bs} {seed}"] = {
                "batch_size": bs,
                "seed": seed,
                "curve": curve,
                "seconds": time.perf_counter() - t,
            }
    return out


def agreement(model, scenes, st, workdir: Path) -> dict:
    """On CUDA: the test mask with AMP against the same model in float32 (share of pixels that agree)."""
    import rasterio

    from cropseg.scene_ops import predict_scene

    paths = {}
    for amp in (False, True):
        m = model.__class__.__new__(model.__class__)
        m.__dict__.update(model.__dict__)
        m.amp, m._net = amp, None
        paths[amp] = workdir / f"amp-{amp}.tif"
        predict_scene(scenes.test, st.features, m, paths[amp])
    with rasterio.open(paths[False]) as a, rasterio.open(paths[True]) as b:
        x, y = a.read(1), b.read(1)
    valid = x != 255
    return {"amp_vs_float32_agreement": float(np.mean(x[valid] == y[valid])), "pixels": int(valid.sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2000, help="scene side in pixels (default 2000)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="Markdown report (default: stdout only)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--sections",
        default="predict,train",
        help="comma-separated: predict, train (the default: both), runtimes (eager vs torch.compile vs ONNX "
        "Runtime for one tile), batch (validation crop F1 and fit time per --batch-sizes and --seeds)",
    )
    ap.add_argument("--batch-sizes", default="16,32,64", help="batch sizes of --sections batch")
    ap.add_argument("--seeds", default="0,1", help="seeds of --sections batch")
    ap.add_argument("--threads", default="1,all", help="CPU thread settings of the training variants (default 1,all)")
    ap.add_argument("overrides", nargs="*", help="further classifier overrides, e.g. classifier.tile_size=256")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cropseg-bench-unet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    import cropseg

    t0 = time.perf_counter()
    cfg, st, scenes, sample, make = build(args.size, workdir, [f"classifier.device={args.device}", *args.overrides])
    model = make()  # loads PyTorch the way cropseg does (OpenMP wait policy set first: see the unet plugin)
    import torch

    # a quickly fitted model to predict with (its speed does not depend on what it learned)
    quick = make(
        epochs=1, class_weight=None, patience=None, **({"max_minutes": None} if "max_minutes" in cfg.classifier else {})
    )
    quick.fit_patches(sample.train, sample.validation, None)
    cores = os.cpu_count() or 1
    threads_model = model.threads
    threads_list: list[int | str | None] = [
        None if t == "all" else t if t == "auto" else int(t) for t in args.threads.split(",")
    ]
    if threads_model not in threads_list:
        threads_list.insert(0, threads_model)
    if quick._device().type == "cuda":
        threads_list = [None]
    res: dict = {
        "machine": f"{platform.machine()}, {cores} cores, {platform.platform()}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cropseg": cropseg.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "size": args.size,
        "overrides": args.overrides,
        "load_start": load(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }

    def save() -> None:  # after every section, so a run cut short still leaves what it measured
        res["seconds"] = time.perf_counter() - t0
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))

    save()
    sections = set(args.sections.split(","))
    if "predict" in sections:
        res["prediction"] = bench_prediction(quick, scenes, st, workdir, args.repeats)
        res["load_after_prediction"] = load()
        save()
    if "runtimes" in sections:
        res["runtimes"] = bench_runtimes(quick, scenes, st, workdir, args.repeats)
        res["load_after_runtimes"] = load()
        save()
    if "batch" in sections:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        res["batch_sizes"] = bench_batch_sizes(make, sample, sizes, [int(x) for x in args.seeds.split(",")])
        res["load_after_batch_sizes"] = load()
        save()
    if "train" in sections:
        res["training"] = bench_training(model, sample, threads_list, args.repeats)
        res["load_after_training"] = load()
        save()
    res["amp_agreement"] = agreement(quick, scenes, st, workdir) if quick._device().type == "cuda" else None
    save()
    report = render(res)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


def render(res: dict) -> str:
    def rows(section: dict, unit: str, ceiling_keys: list[str]) -> list[str]:
        keys = ceiling_keys or [next(k for k, v in section.items() if isinstance(v, dict) and unit in v)]
        ceiling = max(section[k][unit] for k in keys)
        head = "vs all-cores ceiling" if ceiling_keys else f"vs {keys[0]}"
        lines = [f"| variant | seconds (median) | each repeat | {unit.replace('_', ' ')} | {head} |"]
        lines.append("|---|---:|---|---:|---:|")
        for k, v in section.items():
            if isinstance(v, dict) and unit in v:
                each = ", ".join(f"{s:.2f}" for s in v["each"])
                lines.append(f"| {k} | {v['seconds']:.3f} | {each} | {v[unit]:,.0f} | {v[unit] / ceiling:.2f}x |")
        return lines

    out = [
        f"Machine: {res['machine']}; Python {res['python']}, torch {res['torch']}, cropseg {res['cropseg']}"
        + (f"; GPU {res['gpu']}" if res["gpu"] else ""),
        f"Scenes: SYNTHETIC sample {res['size']}x{res['size']}; overrides {res['overrides'] or 'none'}; load average "
        f"at start {res['load_start']}, after prediction {res.get('load_after_prediction', '-')}, after training "
        f"{res.get('load_after_training', '-')}; OMP_WAIT_POLICY {res.get('omp_wait_policy') or 'unset'}.",
    ]
    if "prediction" in res:
        p = res["prediction"]
        out += [
            "",
            f"Prediction ({p['scene']} test scene, tiles of {p['tile']} px + {p['halo']} px halo, device "
            f"{p['device']}, AMP {p['amp']}; {p['tile_pixels']:,} tile pixels):",
            "",
            *rows(p, "pixels_per_second", [k for k in p if k.startswith("bare")]),
        ]
    if "training" in res:
        t = res["training"]
        out += [
            "",
            f"Training ({t['patches']} patches of {t['patch_size']} px, batch {t['batch_size']}, device "
            f"{t['device']}, AMP {t['amp']}):",
            "",
            *rows(t, "patches_per_second", [k for k in t if k.startswith("bare")]),
        ]
        if t.get("threads_auto"):
            out += ["", "threads=auto chose (each fit): " + " | ".join(t["threads_auto"])]
    if "batch_sizes" in res:
        b = res["batch_sizes"]
        out += [
            "",
            f"Batch sizes: validation crop F1 after each of {b['epochs']} epochs (no early stopping, no class "
            f"weights; load after: {res.get('load_after_batch_sizes', '-')}):",
            "",
            "| batch | seed | fit s | best | per epoch |",
            "|---:|---:|---:|---:|---|",
        ]
        for v in b["runs"].values():
            per = ", ".join(f"{c:.3f}" for c in v["curve"])
            out.append(f"| {v['batch_size']} | {v['seed']} | {v['seconds']:.1f} | {max(v['curve']):.3f} | {per} |")
    if "runtimes" in res:
        r = res["runtimes"]
        out += [
            "",
            f"One real test tile ({r['tile']} px + {r['halo']} px halo), 1 thread, forward pass only (load after: "
            f"{res.get('load_after_runtimes', '-')}); torch.compile's first call (compiling) took "
            f"{r.get('compile_seconds', float('nan')):.1f} s, the ONNX export + session "
            f"{r.get('onnx_export_seconds', float('nan')):.1f} s:",
            "",
            *rows({k: v for k, v in r.items() if isinstance(v, dict) and "seconds" in v}, "pixels_per_second", []),
        ]
        for k in ("torch.compile", "onnxruntime"):
            a = r.get(f"{k} agreement")
            if a:
                out.append(
                    f"\n{k} against eager: largest logit difference {a['max_abs_logit_diff']:.2e}, "
                    f"{a['same_mask_share']:.6%} of the tile's pixels on the same side of 0."
                )
        for k in ("compile_error", "onnx_error"):
            if k in r:
                out.append(f"\n{k}: {r[k]}")
    if res.get("amp_agreement"):
        a = res["amp_agreement"]
        out += [
            "",
            f"AMP (bfloat16) vs float32 test mask: {a['amp_vs_float32_agreement']:.5%} of {a['pixels']:,} pixels agree.",
        ]
    out += ["", f"Benchmark time {res['seconds']:.0f} s."]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
