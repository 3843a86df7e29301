"""Patch model ``unet``: a convolutional segmentation network from segmentation-models-pytorch (U-Net by
default; any of its architectures and encoders), trained from scratch on the framework's training patches.

Needs the optional extra: ``pip install 'cropseg[deep]'`` (PyTorch, segmentation-models-pytorch). No
weights are downloaded: ``encoder_weights`` must stay null; ``weights`` loads a local PyTorch state dict
(of the whole network, or of its encoder only) before training. Masked binary cross-entropy (ignore
pixels, 255, count for nothing), Adam, flips / 90-degree rotations; the epoch with the best validation
target (``evaluate.target``, on held-out blocks of the training scene) is kept, training stops early after
``patience`` epochs without a better one or at the ``max_minutes`` budget, and ``class_weight=auto``
trains without and with balanced class weights and keeps the better on validation. Progress lines inside
each epoch. Mixed precision and channels-last memory on CUDA. ``threads=auto`` (default) times the first
training batches with one thread and with every core and keeps the faster. Seeded: the same seed gives the
same weights and masks on CPU (on one machine with a fixed integer ``threads``).
"""

from __future__ import annotations

import copy
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError, PluginError
from cropseg.types import IGNORE, EpochCallback, FitResult, PatchSet

log = logging.getLogger("cropseg")

DEVICES = ("auto", "cpu", "cuda")
CLASS_WEIGHTS = ("auto", "balanced", None)
_BUILD_LOCK = threading.Lock()


#: OpenMP's wait policy for PyTorch's CPU thread pool, set before PyTorch (libgomp) loads unless the
#: environment sets it: idle pool threads sleep instead of spinning, so a busy machine does not take their
#: core away mid-spin (measured: a training epoch with 2 threads 10x faster at load 12-16, 5-9 % slower on an
#: idle machine; benchmarks/README.md)
OMP_WAIT_POLICY = "PASSIVE"


def _deep() -> tuple[Any, Any]:
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    try:
        import segmentation_models_pytorch as smp
        import torch
    except ImportError as exc:
        from cropseg.extras import install_command

        raise PluginError(
            f"classifier=unet needs PyTorch and segmentation-models-pytorch, cropseg's optional extra 'deep' "
            f"({exc}); install it with: {install_command('deep')}"
        ) from None
    return torch, smp


class UNet:
    """See the module docstring and conf/classifier/unet.yaml for the options."""

    #: distributions the logged model needs where it is loaded (pinned into its pip requirements)
    requirements = ("torch", "torchvision", "segmentation-models-pytorch")

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        arch_options: Mapping[str, Any] | None = None,
        weights: str | None = None,
        device: str = "auto",
        epochs: int = 10,
        patch_size: int = 64,
        batch_size: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        augment: bool = True,
        class_weight: str | None = "auto",
        patience: int | None = 3,
        max_minutes: float | None = None,
        halo: int = 32,
        tile_size: int = 512,
        threads: int | str | None = "auto",
        amp: bool | None = None,
        channels_last: bool | None = None,
        seed: int = 0,
    ):
        torch, smp = _deep()
        self.arch, self.encoder = str(arch), str(encoder)
        self.arch_options = dict(arch_options or {})
        if encoder_weights is not None:
            raise ConfigError(
                f"classifier.encoder_weights={encoder_weights}: cropseg downloads no weights; keep "
                "it null and give a local state-dict file as classifier.weights"
            )
        if not hasattr(smp, self.arch) or not isinstance(getattr(smp, self.arch), type):
            archs = ", ".join(
                sorted(
                    n
                    for n in dir(smp)
                    if n[:1].isupper()
                    and isinstance(getattr(smp, n), type)
                    and issubclass(getattr(smp, n), torch.nn.Module)
                )
            )
            raise ConfigError(
                f"classifier.arch={self.arch}: not a segmentation-models-pytorch architecture (one of {archs})"
            )
        if self.encoder not in smp.encoders.get_encoder_names():
            raise ConfigError(
                f"classifier.encoder={self.encoder}: unknown encoder (e.g. resnet18, resnet34, "
                "mobilenet_v2, efficientnet-b0; see segmentation-models-pytorch's encoder list)"
            )
        if device not in DEVICES:
            raise ConfigError(f"classifier.device: one of {', '.join(DEVICES)}, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "classifier.device=cuda: PyTorch sees no CUDA device here (use device=auto or cpu; "
                f"PyTorch {torch.__version__})"
            )
        self.device = device
        for name, val, lo in (
            ("epochs", epochs, 1),
            ("patch_size", patch_size, 8),
            ("batch_size", batch_size, 1),
            ("halo", halo, 0),
            ("tile_size", tile_size, 8),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(f"classifier.{name}: an integer >= {lo}, got {val!r}")
        self.divisor = 2 ** int(self.arch_options.get("encoder_depth", 5))
        if patch_size % self.divisor:
            raise ConfigError(
                f"classifier.patch_size={patch_size}: must be a multiple of {self.divisor} "
                f"(2^encoder_depth) for {self.arch}"
            )
        if class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"classifier.class_weight: auto, balanced or null, got {class_weight!r}")
        if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
            raise ConfigError(f"classifier.patience: a positive integer or null, got {patience!r}")
        if max_minutes is not None and (isinstance(max_minutes, bool) or not float(max_minutes) > 0):
            raise ConfigError(f"classifier.max_minutes: a positive number of minutes or null, got {max_minutes!r}")
        for name, val in (("amp", amp), ("channels_last", channels_last)):
            if val is not None and not isinstance(val, bool):
                raise ConfigError(f"classifier.{name}: true, false or null (null: on CUDA only), got {val!r}")
        if not (
            threads is None
            or threads == "auto"
            or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)
        ):
            raise ConfigError(f"classifier.threads: a positive integer, auto or null, got {threads!r}")
        if not float(lr) > 0:
            raise ConfigError(f"classifier.lr: a positive number, got {lr!r}")
        self.weights = None if weights in (None, "") else str(Path(str(weights)).expanduser())
        if self.weights is not None and not Path(self.weights).is_file():
            raise ConfigError(f"classifier.weights={self.weights}: file not found")
        self.epochs, self.patch_size, self.batch_size = epochs, patch_size, batch_size
        self.lr, self.weight_decay, self.augment = float(lr), float(weight_decay), bool(augment)
        self.class_weight, self.patience, self.halo, self.tile_size = class_weight, patience, halo, tile_size
        self.max_minutes = None if max_minutes is None else float(max_minutes)
        self.amp, self.channels_last = amp, channels_last
        self.threads, self.seed = threads, int(seed)
        #: the clock of the patience / time-budget / progress logic (tests substitute a controllable one)
        self._clock: Callable[[], float] = time.monotonic
        #: seconds of each epoch trained by the last fit (all class-weight candidates, in order)
        self.epoch_seconds: list[float] = []
        self.n_features: int | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self._state: dict[str, Any] | None = None  # fitted weights (CPU tensors)
        self._net: Any = None

    # -- the network -------------------------------------------------------------------------------------
    def _build(self, n_features: int) -> Any:
        torch, smp = _deep()
        torch.manual_seed(self.seed)
        opts = {k: v for k, v in self.arch_options.items()}
        return getattr(smp, self.arch)(
            encoder_name=self.encoder, encoder_weights=None, in_channels=n_features, classes=1, **opts
        )

    def _device(self) -> Any:
        torch, _ = _deep()
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _load_weights(self, net: Any) -> None:
        torch, _ = _deep()
        assert self.weights is not None
        where = f"classifier.weights={self.weights}"
        try:
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise ConfigError(f"{where}: not a PyTorch state dict ({' '.join(str(exc).split())[:160]})") from None
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ConfigError(f"{where}: not a PyTorch state dict")
        keys = set(state)
        target = net if keys & set(net.state_dict()) else net.encoder
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).split("\n\t")[1:2] or str(exc).split())[:200]
            raise ConfigError(
                f"{where}: does not fit {self.arch} with encoder {self.encoder} and "
                f"{self.n_features} input features ({first})"
            ) from None

    def prepare(self, n_features: int) -> None:
        """Check what needs the feature count before any scene is loaded: the weights file fits."""
        self.n_features = int(n_features)
        if self.weights is not None:
            self._load_weights(self._build(self.n_features))

    # -- fitting -----------------------------------------------------------------------------------------
    def fit_patches(
        self, train: PatchSet, validation: PatchSet | None, on_epoch: EpochCallback | None = None
    ) -> FitResult:
        """Train on ``train``; keep the epoch with the best validation target (``on_epoch``'s ``target``,
        else ``val_crop_f1``); stop early after ``patience`` epochs without a better one, or before an
        epoch that would end past ``max_minutes``. ``class_weight=auto`` trains once without and once with
        balanced class weights (each with half of what is left of the time budget) and keeps the one with
        the better validation target (the loop: :mod:`cropseg.training`, shared with ``tempcnn``)."""
        from cropseg.training import class_weight_candidates, fit_candidates, fit_summary

        torch, _ = _deep()
        if isinstance(self.threads, int):
            torch.set_num_threads(self.threads)
        elif self.threads is None:
            from cropseg.parallel import available_cores

            torch.set_num_threads(available_cores())
        X, y = train.X, train.y
        self.n_features = int(X.shape[1])
        self.mean = X.mean(axis=(0, 2, 3)).astype(np.float32)
        self.std = (X.std(axis=(0, 2, 3)) + 1e-6).astype(np.float32)
        dev = self._device()
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        candidates = class_weight_candidates(self.class_weight, validation is not None, "unet")
        Xn = self._normalise(X)
        #: per candidate: CPU threads it trained with at the end (None on CUDA), what threads=auto measured
        threads: dict[str | None, tuple[int | None, str]] = {}

        def train_one(cw: str | None, deadline: float | None, step0: int, label: str) -> Any:
            run, n_threads, note = self._train_one(Xn, y, validation, on_epoch, cw, deadline, step0, label)
            threads[cw] = (n_threads, note)
            return run

        runs, chosen = fit_candidates(
            candidates, name="unet", max_minutes=self.max_minutes, clock=self._clock, train_one=train_one
        )
        self._net = self._build(self.n_features)
        self._net.load_state_dict(chosen.state)
        self._net.to(dev)
        self._net.eval()
        self._state = chosen.state
        self.epoch_seconds = [s for r in runs for s in r.epoch_seconds]
        params, metrics_out, tags = fit_summary(
            "unet", runs, chosen, class_weight_option=self.class_weight, has_validation=validation is not None
        )
        params.update(
            device=str(dev),
            amp=self._amp(dev),
            n_parameters=int(sum(p.numel() for p in self._net.parameters())),
        )
        chosen_threads = threads[chosen.class_weight][0]
        if chosen_threads is not None:
            metrics_out["train_threads"] = float(chosen_threads)
        if self.threads == "auto" and dev.type == "cpu":
            tags["train_threads"] = "; ".join(threads[r.class_weight][1] for r in runs)
        return FitResult(params=params, metrics=metrics_out, tags=tags)

    def _amp(self, dev: Any) -> bool:
        """Mixed precision (bfloat16 autocast): ``amp`` true, or null on CUDA."""
        return bool(self.amp) if self.amp is not None else dev.type == "cuda"

    def _channels_last(self, dev: Any) -> bool:
        return bool(self.channels_last) if self.channels_last is not None else dev.type == "cuda"

    def _train_one(
        self,
        Xn: np.ndarray,
        y: np.ndarray,
        validation: PatchSet | None,
        on_epoch: EpochCallback | None,
        class_weight: str | None,
        deadline: float | None,
        step0: int,
        label: str,
    ) -> tuple[Any, int | None, str]:
        """One training run (:func:`cropseg.training.train_epochs`: epochs until ``epochs``, ``patience`` or
        ``deadline``; the best epoch kept), the CPU threads it ended with (None on CUDA) and, with
        ``threads=auto``, what the thread probe measured and chose."""
        from cropseg.parallel import available_cores
        from cropseg.patches import ThreadChooser, TrainingProgress
        from cropseg.training import train_epochs

        torch, _ = _deep()
        dev = self._device()
        amp = self._amp(dev)
        chooser = None
        if self.threads == "auto" and dev.type == "cpu":
            chooser = ThreadChooser(torch.set_num_threads, available_cores(), clock=self._clock)
        net = self._build(int(Xn.shape[1]))
        if self.weights is not None:
            self._load_weights(net)
        net.to(dev)
        if self._channels_last(dev):
            net = net.to(memory_format=torch.channels_last)
        labelled = y != IGNORE
        n_crop, n_all = int(np.count_nonzero(y == 1)), int(np.count_nonzero(labelled))
        pos_weight = None
        if class_weight == "balanced" and 0 < n_crop < n_all:
            pos_weight = torch.tensor((n_all - n_crop) / n_crop, dtype=torch.float32, device=dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = np.random.default_rng(self.seed)
        n_batches = -(-len(Xn) // self.batch_size)
        progress = TrainingProgress(label, self.epochs, n_batches, self.batch_size, clock=self._clock)

        def run_epoch(progress: TrainingProgress) -> float:
            net.train()
            loss_sum, px_sum = 0.0, 0
            for b, (xt, yt) in enumerate(self._batches(Xn, y, rng, dev), start=1):
                keep = yt != IGNORE
                n = int(keep.sum())
                if chooser is not None and chooser.deciding:
                    chooser.before_batch()
                if n:
                    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                        logits = net(xt)[:, 0]
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits.float()[keep], (yt[keep] == 1).float(), pos_weight=pos_weight, reduction="sum"
                    )
                    opt.zero_grad(set_to_none=True)
                    (loss / n).backward()
                    opt.step()
                    loss_sum, px_sum = loss_sum + float(loss.detach()), px_sum + n
                if chooser is not None and chooser.deciding:
                    chooser.after_batch(len(xt) if n else 0)
                    if not chooser.deciding:
                        log.info("%s: threads=auto: %s", label, chooser.summary())
                progress.batch(b)
            return loss_sum / max(px_sum, 1)

        def validate() -> np.ndarray | None:
            _recalibrate_batchnorm(net, Xn, dev, amp)
            self._net = net
            return self._predict_batch(validation.X) if validation is not None else None

        def snapshot() -> dict[str, Any]:
            return copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})

        run = train_epochs(
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
            class_weight=class_weight,
        )
        threads = torch.get_num_threads() if dev.type == "cpu" else None
        return run, threads, (f"{label}: {chooser.summary()}" if chooser is not None else "")

    def _batches(self, Xn: np.ndarray, y: np.ndarray, rng: np.random.Generator, dev: Any) -> Iterator[tuple[Any, Any]]:
        """The epoch's shuffled, augmented batches as tensors on ``dev``; the next batch is prepared on a
        background thread while the current one trains (numpy releases the GIL for the copies)."""
        from concurrent.futures import ThreadPoolExecutor

        torch, _ = _deep()
        order = rng.permutation(len(Xn))
        starts = list(range(0, len(order), self.batch_size))
        # one augmentation draw per patch, made up front so the result does not depend on thread timing
        draws = [(int(rng.integers(4)), bool(rng.random() < 0.5)) for _ in order] if self.augment else None
        pin = dev.type == "cuda"

        def make(s: int) -> tuple[Any, Any]:
            idx = order[s : s + self.batch_size]
            xb, yb = Xn[idx], y[idx]
            if draws is not None:
                xb, yb = _augment(xb, yb, draws[s : s + self.batch_size])
            xt = torch.from_numpy(np.ascontiguousarray(xb))
            yt = torch.from_numpy(np.ascontiguousarray(yb))
            if pin:
                xt, yt = xt.pin_memory(), yt.pin_memory()
            return xt, yt

        with ThreadPoolExecutor(1, thread_name_prefix="cropseg-batches") as pool:
            nxt = pool.submit(make, starts[0]) if starts else None
            for i in range(len(starts)):
                assert nxt is not None
                xt, yt = nxt.result()
                nxt = pool.submit(make, starts[i + 1]) if i + 1 < len(starts) else None
                xt = xt.to(dev, non_blocking=pin)
                if self._channels_last(dev):
                    xt = xt.contiguous(memory_format=torch.channels_last)
                yield xt, yt.to(dev, non_blocking=pin)

    # -- prediction --------------------------------------------------------------------------------------
    def _ready(self) -> Any:
        with _BUILD_LOCK:  # block tasks run on several threads: build the network once
            if self._net is None:
                if self._state is None or self.n_features is None:
                    raise PluginError("classifier unet: predict before fit")
                torch, _ = _deep()
                net = self._build(self.n_features)
                net.load_state_dict(self._state)
                dev = self._device()
                net.to(dev)
                if self._channels_last(dev):
                    net = net.to(memory_format=torch.channels_last)
                net.eval()
                self._net = net
        return self._net

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """Network output for normalised ``(n, f, h, w)`` input, padded to the encoder's multiple."""
        torch, _ = _deep()
        net = self._ready()
        net.eval()
        n, f, h, w = x.shape
        assert self.mean is not None and self.std is not None
        ph, pw = -h % self.divisor, -w % self.divisor
        if ph or pw:
            pad = ((-self.mean / self.std)[None, :, None, None]).astype(np.float32)  # zero reflectance
            big = np.empty((n, f, h + ph, w + pw), dtype=np.float32)
            big[:] = pad
            big[:, :, :h, :w] = x
            x = big
        dev = next(net.parameters()).device
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
        if self._channels_last(dev):
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self._amp(dev)):
            out = net(xt)[:, 0]
        return out.float().cpu().numpy()[:, :h, :w]

    def _normalise(self, X: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.std is not None
        return ((X - self.mean[None, :, None, None]) / self.std[None, :, None, None]).astype(np.float32)

    def _predict_batch(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], X.shape[2], X.shape[3]), dtype=np.uint8)
        for s in range(0, len(X), 64):
            out[s : s + 64] = self._logits(self._normalise(X[s : s + 64])) > 0
        return out

    def predict_block(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(f, h, w)`` features of a block plus halo -> uint8 0/1 ``(h, w)``."""
        from cropseg.parallel import task_threads

        torch, _ = _deep()
        n = self.threads if isinstance(self.threads, int) else task_threads()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return (self._logits(self._normalise(features[None]))[0] > 0).astype(np.uint8)

    # -- pickling: options, normalisation and the best epoch's weights; the network is rebuilt -----------
    def __getstate__(self) -> dict[str, Any]:
        torch, _ = _deep()
        state = {k: v for k, v in self.__dict__.items() if k not in ("_net", "_state", "_clock")}
        buf = io.BytesIO()
        torch.save(self._state, buf)
        state["_weights_bytes"] = buf.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        torch, _ = _deep()
        raw = state.pop("_weights_bytes", None)
        # models pickled before these options existed
        for key, default in (("amp", None), ("channels_last", None), ("max_minutes", None), ("epoch_seconds", [])):
            state.setdefault(key, default)
        self.__dict__.update(state)
        self._clock = time.monotonic
        self._net = None
        self._state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True) if raw else None

    def save_weights(self, path: Path) -> Path:
        """Write the kept (best epoch's) weights as a PyTorch state dict, loadable as ``classifier.weights``."""
        torch, _ = _deep()
        if self._state is None:
            raise PluginError("classifier unet: no fitted weights to save")
        torch.save(self._state, path)
        return path


#: training patches (an evenly spaced subset) over which batch-norm statistics are re-estimated after each epoch
BN_PATCHES = 64


def _recalibrate_batchnorm(net: Any, X: np.ndarray, dev: Any, amp: bool) -> None:
    """Re-estimate the batch-norm statistics of the current weights on (at most :data:`BN_PATCHES`, evenly
    spaced) training patches: a plain average over batches of 64, no gradient. After few steps the running
    averages still hold the statistics of earlier weights and skew evaluation-mode predictions; a bounded
    subset keeps this at a small share of an epoch."""
    torch, _ = _deep()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    idx = np.unique(np.linspace(0, len(X) - 1, min(len(X), BN_PATCHES)).round().astype(np.int64))
    with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
        for s in range(0, len(idx), 64):
            net(torch.from_numpy(np.ascontiguousarray(X[idx[s : s + 64]])).to(dev))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def _augment(x: np.ndarray, y: np.ndarray, draws: list[tuple[int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Flips and 90-degree rotations of each patch (``draws``: (quarter turns, flip) per patch; the same
    for its features and labels)."""
    xs, ys = [], []
    for xi, yi, (k, flip) in zip(x, y, draws):
        xi, yi = np.rot90(xi, k, axes=(-2, -1)), np.rot90(yi, k, axes=(-2, -1))
        if flip:
            xi, yi = xi[..., ::-1], yi[..., ::-1]
        xs.append(xi)
        ys.append(yi)
    return np.stack(xs), np.stack(ys)


@hookimpl
def cropseg_register_patch_models(register):
    register("unet", UNet)
