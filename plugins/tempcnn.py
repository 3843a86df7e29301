"""Patch model ``tempcnn``: TempCNN (Pelletier, Webb & Petitjean 2019, "Temporal Convolutional Neural
Network for the Classification of Satellite Image Time Series", Remote Sensing 11(5):523), a per-pixel
temporal model for time stacks.

Each pixel's time series, ``(channels, dates)`` with the channels of one date (bands, indices, validity)
as 1-D signals over the dates, goes through ``len(filters)`` 1-D convolutions over time (default three of
64 filters, kernel 5, zero padding: the series keeps its length), each with batch norm, ReLU and dropout
(0.2), is flattened, joined by the pixel's undated features (e.g. ``ndvi_amplitude``), through one dense
layer (256 units, batch norm, ReLU, dropout 0.5) to a softmax over non-crop / crop. Defaults follow the
paper and the ``sits`` package's ``sits_tempcnn``.

Input: the run's features of a time stack, named ``<channel>@<date>`` (``features=temporal``, whose gaps
are filled by linear interpolation in days, or ``features.fill=none``, which leaves gaps at 0 and adds a
``valid@<date>`` channel per date; ``features=bands`` gives raw per-date bands, a cloud-masked date
reading 0 with no validity channel). Single-date features are refused before any work.

Training pixels come from the framework's training patches (``train.patches``: drawn from the training
scene only, stratified, with validation patches from whole held-out spatial blocks); at most
``max_pixels`` labelled pixels of the training patches are used (a seeded subsample), so memory is
bounded. The validation patches are predicted whole after every epoch and scored on the run's target
(``evaluate.target``); the best epoch is kept, training stops after ``patience`` epochs without a better
one or at the ``max_minutes`` budget, ``class_weight=auto`` trains without and with balanced class
weights and keeps the better on validation (the loop is :mod:`cropseg.training`, shared with the
U-Net's behaviour and its MLflow step metrics). Scenes are predicted block by block (``halo`` 0: a
pixel's own series only). Needs the optional extra ``deep`` (PyTorch).
"""

from __future__ import annotations

import copy
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError, PluginError
from cropseg.types import CROP, IGNORE, NONCROP, EpochCallback, FitResult, PatchSet

log = logging.getLogger("cropseg")

DEVICES = ("auto", "cpu", "cuda")
CLASS_WEIGHTS = ("auto", "balanced", None)
_BUILD_LOCK = threading.Lock()
#: pixels per forward pass when predicting
PREDICT_CHUNK = 65536


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        from cropseg.extras import install_command

        raise PluginError(
            f"classifier=tempcnn needs PyTorch, cropseg's optional extra 'deep' ({exc}); install it with: "
            f"{install_command('deep')}"
        ) from None
    return torch


def temporal_layout(feature_names: Sequence[str]) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``(dates, channels, series index (dates, channels), static index)`` of feature names: names
    ``<channel>@<date>`` are grouped by date (in order of appearance) into one series per channel, which
    every date must have; the other names are static (per-pixel, undated) features. Raises
    :class:`ConfigError` unless there are two dates or more."""
    dated: dict[str, dict[str, int]] = {}
    static: list[int] = []
    for i, name in enumerate(feature_names):
        channel, sep, when = str(name).rpartition("@")
        if sep and channel and when:
            dated.setdefault(when, {})[channel] = i
        else:
            static.append(i)
    dates = list(dated)
    if len(dates) < 2:
        raise ConfigError(
            "classifier=tempcnn: needs a time stack of two or more dates (source.dates=N for the sample, a "
            "list of images per scene for source=local) and per-date features (features=temporal or bands); "
            f"the features are {', '.join(map(str, feature_names[:8]))}{' ...' if len(feature_names) > 8 else ''}"
        )
    channels = list(dated[dates[0]])
    for d in dates[1:]:
        if list(dated[d]) != channels:
            raise ConfigError(
                f"classifier=tempcnn: every date needs the same features; date {d} has {', '.join(dated[d])}, "
                f"date {dates[0]} {', '.join(channels)}"
            )
    series = np.array([[dated[d][c] for c in channels] for d in dates], dtype=np.int64)
    return dates, channels, series, np.asarray(static, dtype=np.int64)


def _network(torch: Any, channels: int, dates: int, n_static: int, opts: dict[str, Any]) -> Any:
    nn = torch.nn

    class TempCNNNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            c = channels
            k = int(opts["kernel_size"])
            for f in opts["filters"]:
                layers += [
                    nn.Conv1d(c, int(f), k, padding=k // 2),
                    nn.BatchNorm1d(int(f)),
                    nn.ReLU(),
                    nn.Dropout(float(opts["conv_dropout"])),
                ]
                c = int(f)
            self.conv = nn.Sequential(*layers)
            d = int(opts["dense_units"])
            self.dense = nn.Sequential(
                nn.Linear(c * dates + n_static, d),
                nn.BatchNorm1d(d),
                nn.ReLU(),
                nn.Dropout(float(opts["dense_dropout"])),
            )
            self.out = nn.Linear(d, 2)

        def forward(self, series: Any, static: Any) -> Any:
            h = self.conv(series).flatten(1)
            if static.shape[1]:
                h = torch.cat([h, static], dim=1)
            return self.out(self.dense(h))

    return TempCNNNet()


class TempCNN:
    """See the module docstring and conf/classifier/tempcnn.yaml for the options."""

    #: distributions the logged model needs where it is loaded (pinned into its pip requirements)
    requirements = ("torch",)

    def __init__(
        self,
        filters: Sequence[int] = (64, 64, 64),
        kernel_size: int = 5,
        conv_dropout: float = 0.2,
        dense_units: int = 256,
        dense_dropout: float = 0.5,
        device: str = "auto",
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        class_weight: str | None = "auto",
        patience: int | None = 3,
        max_minutes: float | None = None,
        max_pixels: int = 50000,
        patch_size: int = 32,
        tile_size: int = 256,
        threads: int | None = None,
        seed: int = 0,
    ):
        torch = _torch()
        filters = list(filters or [])
        if not filters or any(not isinstance(f, int) or isinstance(f, bool) or f < 1 for f in filters):
            raise ConfigError(f"classifier.filters: a list of positive integers (one per 1-D conv), got {filters!r}")
        for name, val, lo in (
            ("kernel_size", kernel_size, 1),
            ("dense_units", dense_units, 1),
            ("epochs", epochs, 1),
            ("batch_size", batch_size, 2),
            ("max_pixels", max_pixels, 2),
            ("patch_size", patch_size, 1),
            ("tile_size", tile_size, 1),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(f"classifier.{name}: an integer >= {lo}, got {val!r}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"classifier.kernel_size={kernel_size}: must be odd (the series keeps its length)")
        for name, val in (("conv_dropout", conv_dropout), ("dense_dropout", dense_dropout)):
            if isinstance(val, bool) or not 0.0 <= float(val) < 1.0:
                raise ConfigError(f"classifier.{name}: in [0, 1), got {val!r}")
        if device not in DEVICES:
            raise ConfigError(f"classifier.device: one of {', '.join(DEVICES)}, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"classifier.device=cuda: PyTorch sees no CUDA device here (use device=auto or cpu; PyTorch "
                f"{torch.__version__})"
            )
        if class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"classifier.class_weight: auto, balanced or null, got {class_weight!r}")
        if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
            raise ConfigError(f"classifier.patience: a positive integer or null, got {patience!r}")
        if max_minutes is not None and (isinstance(max_minutes, bool) or not float(max_minutes) > 0):
            raise ConfigError(f"classifier.max_minutes: a positive number of minutes or null, got {max_minutes!r}")
        if not float(lr) > 0:
            raise ConfigError(f"classifier.lr: a positive number, got {lr!r}")
        self.filters, self.kernel_size = [int(f) for f in filters], int(kernel_size)
        self.conv_dropout, self.dense_dropout = float(conv_dropout), float(dense_dropout)
        self.dense_units, self.device = int(dense_units), device
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, float(lr), float(weight_decay)
        self.class_weight, self.patience = class_weight, patience
        self.max_minutes = None if max_minutes is None else float(max_minutes)
        self.max_pixels, self.patch_size, self.tile_size = max_pixels, patch_size, tile_size
        #: a pixel's own time series only: no spatial context
        self.halo = 0
        self.threads, self.seed = threads, int(seed)
        #: the clock of the patience / time-budget / progress logic (tests substitute a controllable one)
        self._clock: Callable[[], float] = time.monotonic
        self.epoch_seconds: list[float] = []
        self.n_features: int | None = None
        self.feature_names: list[str] | None = None
        self.dates: list[str] = []
        self.channels: list[str] = []
        self._series = np.zeros((0, 0), np.int64)
        self._static = np.zeros(0, np.int64)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self._state: dict[str, Any] | None = None
        self._net: Any = None

    # -- checks before any work ----------------------------------------------------------------------------
    def prepare(self, n_features: int) -> None:
        self.n_features = int(n_features)

    def check_feature_names(self, names: Sequence[str]) -> None:
        """Refuse features that are not a time series of two or more dates (before any pixel is read)."""
        temporal_layout(names)

    # -- the network ---------------------------------------------------------------------------------------
    def _opts(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "conv_dropout": self.conv_dropout,
            "dense_units": self.dense_units,
            "dense_dropout": self.dense_dropout,
        }

    def _build(self) -> Any:
        torch = _torch()
        torch.manual_seed(self.seed)
        return _network(torch, len(self.channels), len(self.dates), len(self._static), self._opts())

    def _device(self) -> Any:
        torch = _torch()
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _inputs(self, X: np.ndarray, dev: Any) -> tuple[Any, Any]:
        """Normalised pixel rows ``(n, f)`` -> (series ``(n, channels, dates)``, static ``(n, s)``) tensors."""
        torch = _torch()
        series = np.ascontiguousarray(X[:, self._series].transpose(0, 2, 1))
        static = np.ascontiguousarray(X[:, self._static])
        return torch.from_numpy(series).to(dev), torch.from_numpy(static).to(dev)

    def _normalise(self, X: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.std is not None
        return ((X - self.mean) / self.std).astype(np.float32)

    # -- fitting -------------------------------------------------------------------------------------------
    def _pixels(self, patches: PatchSet, cap: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Labelled pixels of the patches as rows ``(n, f)`` and labels; at most ``cap`` (a seeded subsample)."""
        y = patches.y.reshape(-1)
        keep = np.flatnonzero(y != IGNORE)
        if cap is not None and len(keep) > cap:
            keep = np.sort(rng.choice(keep, size=cap, replace=False))
        p, q = patches.X.shape[2:]
        which, rest = np.divmod(keep, p * q)
        rows = patches.X[which, :, rest // q, rest % q]  # (n, f): one pixel's features per row
        return np.ascontiguousarray(rows, dtype=np.float32), y[keep]

    def fit_patches(
        self, train: PatchSet, validation: PatchSet | None, on_epoch: EpochCallback | None = None
    ) -> FitResult:
        """Train on at most ``max_pixels`` labelled pixels of ``train``; keep the epoch with the best
        validation target; stop early after ``patience`` epochs without a better one, or before an epoch
        that would end past ``max_minutes``; ``class_weight=auto`` keeps the better of none / balanced."""
        from cropseg.patches import TrainingProgress
        from cropseg.training import class_weight_candidates, fit_candidates, fit_summary, train_epochs

        torch = _torch()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.feature_names = list(train.feature_names)
        self.dates, self.channels, self._series, self._static = temporal_layout(self.feature_names)
        self.n_features = len(self.feature_names)
        rng = np.random.default_rng(self.seed)
        X, y = self._pixels(train, self.max_pixels, rng)
        if not (np.any(y == CROP) and np.any(y == NONCROP)):
            raise PluginError("classifier tempcnn: the training pixels hold one class only")
        self.mean = X.mean(axis=0).astype(np.float32)
        self.std = (X.std(axis=0) + 1e-6).astype(np.float32)
        Xn = self._normalise(X)
        val_X = None
        if validation is not None:
            f = validation.X.shape[1]
            val_X = self._normalise(np.ascontiguousarray(validation.X.transpose(0, 2, 3, 1).reshape(-1, f)))
        dev = self._device()
        log.info(
            "tempcnn: %d training pixels (%d crop) of %d dates x %d channels + %d static features, %s",
            len(y),
            int(np.count_nonzero(y == CROP)),
            len(self.dates),
            len(self.channels),
            len(self._static),
            dev,
        )

        def validate() -> np.ndarray | None:
            if validation is None or val_X is None:
                return None
            return self._predict_rows_normalised(val_X).reshape(validation.y.shape)

        def train_one(cw: str | None, deadline: float | None, step0: int, label: str) -> Any:
            net = self._build().to(dev)
            self._net = net
            weight = None
            n_crop = int(np.count_nonzero(y == CROP))
            if cw == "balanced" and 0 < n_crop < len(y):
                weight = torch.tensor([1.0, (len(y) - n_crop) / n_crop], dtype=torch.float32, device=dev)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            order_rng = np.random.default_rng(self.seed)
            n_batches = -(-len(Xn) // self.batch_size)
            progress = TrainingProgress(
                label, self.epochs, n_batches, self.batch_size, clock=self._clock, unit="pixels"
            )
            series_all, static_all = self._inputs(Xn, dev)
            y_all = torch.from_numpy(y.astype(np.int64)).to(dev)

            def run_epoch(progress: TrainingProgress) -> float:
                net.train()
                order = torch.from_numpy(order_rng.permutation(len(Xn))).to(dev)
                loss_sum = 0.0
                for b, s in enumerate(range(0, len(order), self.batch_size), start=1):
                    idx = order[s : s + self.batch_size]
                    if len(idx) < 2:  # batch norm needs two samples
                        continue
                    logits = net(series_all[idx], static_all[idx])
                    loss = torch.nn.functional.cross_entropy(logits, y_all[idx], weight=weight, reduction="mean")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * len(idx)
                    progress.batch(b)
                net.eval()
                return loss_sum / max(len(Xn), 1)

            def snapshot() -> dict[str, Any]:
                return copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})

            return train_epochs(
                label=label,
                epochs=self.epochs,
                patience=self.patience,
                deadline=deadline,
                clock=self._clock,
                progress=progress,
                n_samples=len(Xn),
                run_epoch=run_epoch,
                validate=validate,
                snapshot=snapshot,
                on_epoch=on_epoch,
                step0=step0,
                class_weight=cw,
            )

        candidates = class_weight_candidates(self.class_weight, validation is not None, "tempcnn")
        runs, chosen = fit_candidates(
            candidates, name="tempcnn", max_minutes=self.max_minutes, clock=self._clock, train_one=train_one
        )
        self._state = chosen.state
        self._net = None
        net = self._ready()
        self.epoch_seconds = [s for r in runs for s in r.epoch_seconds]
        params, metrics, tags = fit_summary(
            "tempcnn",
            runs,
            chosen,
            class_weight_option=self.class_weight,
            has_validation=validation is not None,
            samples="pixels",
        )
        params.update(
            device=str(dev),
            n_parameters=int(sum(p.numel() for p in net.parameters())),
            dates=len(self.dates),
            channels=",".join(self.channels),
            static_features=len(self._static),
        )
        metrics["train_model_pixels"] = float(len(y))
        return FitResult(params=params, metrics=metrics, tags=tags)

    # -- prediction ----------------------------------------------------------------------------------------
    def _ready(self) -> Any:
        with _BUILD_LOCK:  # block tasks run on several threads: build the network once
            if self._net is None:
                if self._state is None or self.feature_names is None:
                    raise PluginError("classifier tempcnn: predict before fit")
                net = self._build()
                net.load_state_dict(self._state)
                net.to(self._device())
                net.eval()
                self._net = net
        return self._net

    def _predict_rows_normalised(self, Xn: np.ndarray) -> np.ndarray:
        torch = _torch()
        net = self._ready()
        net.eval()
        dev = next(net.parameters()).device
        out = np.empty(len(Xn), dtype=np.uint8)
        with torch.inference_mode():
            for s in range(0, len(Xn), PREDICT_CHUNK):
                series, static = self._inputs(Xn[s : s + PREDICT_CHUNK], dev)
                logits = net(series, static)
                out[s : s + PREDICT_CHUNK] = (logits[:, 1] > logits[:, 0]).cpu().numpy()
        return out

    def predict_rows(self, features: np.ndarray) -> np.ndarray:
        """Pixel rows ``(n, f)`` of the run's features -> uint8 0/1 ``(n,)`` (a per-pixel model: exact)."""
        F = np.asarray(features, dtype=np.float32)
        if F.ndim != 2 or F.shape[1] != self.n_features:
            raise PluginError(f"classifier tempcnn: expected rows of {self.n_features} features, got {F.shape}")
        return self._predict_rows_normalised(self._normalise(F))

    def predict_block(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(f, h, w)`` features of a block -> uint8 0/1 ``(h, w)``."""
        from cropseg.parallel import task_threads

        torch = _torch()
        n = int(self.threads or task_threads())
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        f, h, w = features.shape
        rows = np.ascontiguousarray(features.reshape(f, -1).T)
        out = np.zeros(h * w, dtype=np.uint8)
        idx = np.flatnonzero(np.asarray(valid).reshape(-1))
        if len(idx):
            out[idx] = self.predict_rows(rows[idx])
        return out.reshape(h, w)

    # -- pickling: options, layout, normalisation and the kept epoch's weights; the network is rebuilt -----
    def __getstate__(self) -> dict[str, Any]:
        torch = _torch()
        state = {k: v for k, v in self.__dict__.items() if k not in ("_net", "_state", "_clock")}
        buf = io.BytesIO()
        torch.save(self._state, buf)
        state["_weights_bytes"] = buf.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        torch = _torch()
        raw = state.pop("_weights_bytes", None)
        self.__dict__.update(state)
        self._clock = time.monotonic
        self._net = None
        self._state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True) if raw else None

    def save_weights(self, path: Any) -> Any:
        """Write the kept epoch's weights as a PyTorch state dict (an artifact of the run)."""
        torch = _torch()
        if self._state is None:
            raise PluginError("classifier tempcnn: no fitted weights to save")
        torch.save(self._state, path)
        return path


@hookimpl
def cropseg_register_patch_models(register):
    register("tempcnn", TempCNN)
