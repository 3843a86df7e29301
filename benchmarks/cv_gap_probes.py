"""Can any estimate from the training scene predict the hard preset's test score? Probes of the CV-test gap.

    .venv/bin/python benchmarks/model_selection.py ...   # not needed first: this script makes its own scenes
    .venv/bin/python benchmarks/cv_gap_probes.py --seeds 42 7 3 --out probes.md

For each source seed of the hard SYNTHETIC preset (``source.preset=hard``: train 45 % crop, test 25 %,
crop-like grass and shrubs, the test scene's band gain, label noise) the scenes are generated and labelled
with cropseg's own source and labeler, then, outside the pipeline (scikit-learn on whole-scene arrays, a
diagnosis, not a cropseg feature), for KNN on the pixel's bands and hist gradient boosting on bands + NDVI +
mean / std of NDVI and NIR over radii 1, 2, 5, 10 (approximately ``features=context``):

* ``cv``: spatial 3-fold CV on the training scene (128-px blocks as groups, 60,000 pixels), threshold chosen
  on its out-of-fold probabilities, the target crop F1 (what a run reports);
* ``test``: the model fitted on those pixels, tested on 100,000 labelled pixels of the test scene at that
  threshold; ``test_best_threshold``: at the threshold that is best *on the test scene* (an oracle);
* ``cv_at_test_share``: the CV's out-of-fold pixels reweighted to the test scene's labelled crop share (the
  true one, an oracle for prior shift; cropseg's ``cv_at_test_share`` metric does the same from class rates);
* ``iw_cv``: importance-weighted CV (Sugiyama et al. 2007): out-of-fold pixels weighted by p(test | x) /
  p(train | x) from a classifier told the two scenes' pixels apart (the test scene's imagery, not its
  labels); ``iw_ess``: the weights' effective sample size as a share of the pixels;
* ``own_cv``: the same spatial CV on the *test* scene with its labels (an oracle: what CV says there);
* ``test_norm_<how>``: KNN on bands standardised per scene (``median``: divided by the scene's band medians;
  ``p2_98``: scaled to its 2nd-98th percentiles; ``z``: mean and sd), at the CV's threshold.

Prints a Markdown table (mean ± sd over the seeds, and per seed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def scenes(seed: int, size: int, work: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(reflectance bands x H x W, labels H x W with 255 = unlabelled) of the hard preset's two scenes."""
    import rasterio

    from cropseg.config import compose
    from cropseg.pipeline import build_stages

    cfg = compose(["source.preset=hard", f"source.seed={seed}", f"source.size={size}", f"cache_dir={work}"])
    st = build_stages(cfg)
    pair = st.source.load(work / "cache")
    out = {}
    for role in ("train", "test"):
        scene = getattr(pair, role)
        labels = st.labeler.label(scene, work / f"{seed}-{role}_labels.tif")
        with rasterio.open(scene.path) as src:
            dn = src.read().astype(np.float32)
        gains = np.asarray(scene.gains, np.float32)[:, None, None]
        offsets = np.asarray(scene.offsets, np.float32)[:, None, None]
        with rasterio.open(labels.path) as src:
            y = src.read(1)
        out[role] = (dn * gains + offsets, y)
    return out


def context(x: np.ndarray) -> np.ndarray:
    """Pixels x features: 4 bands, NDVI, mean / std of NDVI and NIR over radii 1, 2, 5, 10."""
    import cv2

    b, g, r, n = x[:4]
    ndvi = (n - r) / (n + r + 1e-6)
    feats = [b, g, r, n, ndvi]
    for rad in (1, 2, 5, 10):
        k = (2 * rad + 1, 2 * rad + 1)
        for a in (ndvi, n):
            m = cv2.blur(a, k, borderType=cv2.BORDER_REFLECT)
            m2 = cv2.blur(a * a, k, borderType=cv2.BORDER_REFLECT)
            feats += [m, np.sqrt(np.maximum(m2 - m * m, 0))]
    return np.stack([f.ravel() for f in feats], 1)


def bands(x: np.ndarray, how: str = "none") -> np.ndarray:
    f = x[:4].reshape(4, -1).T.copy()
    if how == "median":
        f /= np.median(f, 0)
    elif how == "p2_98":
        lo, hi = np.percentile(f, [2, 98], 0)
        f = (f - lo) / (hi - lo)
    elif how == "z":
        f = (f - f.mean(0)) / f.std(0)
    return f


def f1(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, sample_weight=w))


def best_threshold(p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    ts = np.linspace(0.02, 0.98, 49)
    scores = [f1(y, p >= t, w) for t in ts]
    i = int(np.argmax(scores))
    return float(ts[i]), float(scores[i])


def probe(seed: int, size: int, work: Path) -> dict[str, dict[str, float]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    sc = scenes(seed, size, work)
    (tr, ytr), (te, yte) = sc["train"], sc["test"]
    rng = np.random.default_rng(seed)
    h, w = ytr.shape
    groups = ((np.arange(h)[:, None] // 128) * 1000 + np.arange(w)[None, :] // 128).ravel()
    idx = rng.choice(np.flatnonzero(ytr.ravel() != 255), 60000, replace=False)
    tl = rng.choice(np.flatnonzero(yte.ravel() != 255), 100000, replace=False)
    own = rng.choice(np.flatnonzero(yte.ravel() != 255), 60000, replace=False)
    ys, yt, yo = ytr.ravel()[idx], yte.ravel()[tl], yte.ravel()[own]
    share_tr, share_te = float(ys.mean()), float(yt.mean())
    cv = GroupKFold(3)
    models = {
        "knn_bands": (lambda: KNeighborsClassifier(37, n_jobs=-1), bands, True),
        "hgb_context": (lambda: HistGradientBoostingClassifier(random_state=0), context, False),
    }
    res: dict[str, dict[str, float]] = {}
    for name, (make, featurize, scale) in models.items():
        ftr, fte = featurize(tr), featurize(te)
        xs = ftr[idx]
        sd = xs.std(0) if scale else np.ones(xs.shape[1], np.float32)
        oof = cross_val_predict(make(), xs / sd, ys, groups=groups[idx], cv=cv, method="predict_proba")[:, 1]
        t_cv, f_cv = best_threshold(oof, ys)
        model = make().fit(xs / sd, ys)
        p = model.predict_proba(fte[tl] / sd)[:, 1]
        r = {"cv": f_cv, "test": f1(yt, p >= t_cv), "test_best_threshold": best_threshold(p, yt)[1]}
        prior_w = np.where(ys == 1, share_te / share_tr, (1 - share_te) / (1 - share_tr))
        r["cv_at_test_share"] = f1(ys, oof >= t_cv, prior_w)
        # importance weights from a scene classifier (train 0 / test 1) on the same features
        ti = rng.choice(fte.shape[0], len(idx), replace=False)
        d = np.vstack([xs, fte[ti]]) / sd
        dl = np.r_[np.zeros(len(idx)), np.ones(len(ti))]
        pd = cross_val_predict(
            HistGradientBoostingClassifier(random_state=0, max_iter=100), d, dl, cv=3, method="predict_proba"
        )
        iw = np.clip(pd[: len(idx), 1] / np.maximum(pd[: len(idx), 0], 1e-6), 0, 50)
        r["iw_cv"] = f1(ys, oof >= t_cv, iw)
        r["iw_ess"] = float(iw.sum() ** 2 / (iw**2).sum() / len(iw))
        xo = fte[own] / sd
        oof_o = cross_val_predict(make(), xo, yo, groups=groups[own], cv=cv, method="predict_proba")[:, 1]
        r["own_cv"] = best_threshold(oof_o, yo)[1]
        if name == "knn_bands":
            for how in ("median", "p2_98", "z"):
                a, b = bands(tr, how)[idx], bands(te, how)[tl]
                s2 = a.std(0)
                o2 = cross_val_predict(make(), a / s2, ys, groups=groups[idx], cv=cv, method="predict_proba")[:, 1]
                t2 = best_threshold(o2, ys)[0]
                r[f"test_norm_{how}"] = f1(yt, make().fit(a / s2, ys).predict_proba(b / s2)[:, 1] >= t2)
        res[name] = r
        print(f"seed {seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), file=sys.stderr, flush=True)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path("cv_gap_probes"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = {seed: probe(seed, args.size, work) for seed in args.seeds}
    load = os.getloadavg()
    lines = [
        "| probe (hard SYNTHETIC preset) | " + " | ".join(next(iter(per_seed.values()))) + " |",
        "|---|" + "---|" * len(next(iter(per_seed.values()))),
    ]
    keys = list(dict.fromkeys(k for r in per_seed.values() for m in r.values() for k in m))
    for k in keys:
        cells = []
        for model in next(iter(per_seed.values())):
            vals = [per_seed[s][model][k] for s in args.seeds if k in per_seed[s][model]]
            if not vals:
                cells.append("-")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f} ± {sd:.3f} ({', '.join(f'{v:.3f}' for v in vals)})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append(
        f"\nSource seeds {', '.join(map(str, args.seeds))}, {args.size}x{args.size} px; mean ± sd (per seed in "
        f"brackets); {time.perf_counter() - t0:.0f} s; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} on {os.cpu_count()} cores."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
