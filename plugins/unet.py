"""Patch model ``unet``: a convolutional segmentation network from segmentation-models-pytorch (U-Net by
default; any of its architectures and encoders), trained from scratch on the framework's training patches.

Needs the optional extra: ``pip install 'cropseg[deep]'`` (PyTorch, segmentation-models-pytorch). No
weights are downloaded: ``encoder_weights`` must stay null; ``weights`` loads a local PyTorch state dict
(of the whole network, or of its encoder only) before training. Masked binary cross-entropy (ignore
pixels, 255, count for nothing), Adam, flips / 90-degree rotations, optional class weighting; the epoch
with the best validation crop F1 (on held-out blocks of the training scene) is kept. Seeded: the same
seed gives the same weights and masks on CPU.
"""

from __future__ import annotations

import copy
import io
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError, PluginError
from cropseg.types import IGNORE, EpochCallback, FitResult, PatchSet

log = logging.getLogger("cropseg")

DEVICES = ("auto", "cpu", "cuda")


def _deep() -> tuple[Any, Any]:
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
        class_weight: str | None = None,
        patience: int | None = None,
        halo: int = 32,
        tile_size: int = 512,
        threads: int | None = None,
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
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"classifier.class_weight: null or balanced, got {class_weight!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ConfigError(f"classifier.patience: a positive integer or null, got {patience!r}")
        if not float(lr) > 0:
            raise ConfigError(f"classifier.lr: a positive number, got {lr!r}")
        self.weights = None if weights in (None, "") else str(Path(str(weights)).expanduser())
        if self.weights is not None and not Path(self.weights).is_file():
            raise ConfigError(f"classifier.weights={self.weights}: file not found")
        self.epochs, self.patch_size, self.batch_size = epochs, patch_size, batch_size
        self.lr, self.weight_decay, self.augment = float(lr), float(weight_decay), bool(augment)
        self.class_weight, self.patience, self.halo, self.tile_size = class_weight, patience, halo, tile_size
        self.threads, self.seed = threads, int(seed)
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
        torch, _ = _deep()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        X, y = train.X, train.y
        self.n_features = int(X.shape[1])
        self.mean = X.mean(axis=(0, 2, 3)).astype(np.float32)
        self.std = (X.std(axis=(0, 2, 3)) + 1e-6).astype(np.float32)
        dev = self._device()
        net = self._build(self.n_features)
        if self.weights is not None:
            self._load_weights(net)
        net.to(dev)
        labelled = y != IGNORE
        n_crop, n_all = int(np.count_nonzero(y == 1)), int(np.count_nonzero(labelled))
        pos_weight = None
        if self.class_weight == "balanced" and 0 < n_crop < n_all:
            pos_weight = torch.tensor((n_all - n_crop) / n_crop, dtype=torch.float32, device=dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = np.random.default_rng(self.seed)
        Xn = (X - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        best: tuple[float, int, Any] = (-1.0, 0, None)
        history, waited, t0 = [], 0, time.perf_counter()
        for epoch in range(1, self.epochs + 1):
            net.train()
            order = rng.permutation(len(Xn))
            loss_sum, px_sum = 0.0, 0
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                xb, yb = Xn[idx], y[idx]
                if self.augment:
                    xb, yb = _augment(xb, yb, rng)
                xt = torch.from_numpy(np.ascontiguousarray(xb)).to(dev)
                yt = torch.from_numpy(np.ascontiguousarray(yb)).to(dev)
                keep = yt != IGNORE
                if not bool(keep.any()):
                    continue
                logits = net(xt)[:, 0]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[keep], (yt[keep] == 1).float(), pos_weight=pos_weight, reduction="sum"
                )
                n = int(keep.sum())
                opt.zero_grad()
                (loss / n).backward()
                opt.step()
                loss_sum, px_sum = loss_sum + float(loss.detach()), px_sum + n
            train_loss = loss_sum / max(px_sum, 1)
            _recalibrate_batchnorm(net, Xn, self.batch_size, dev)
            self._net = net
            val_pred = self._predict_batch(validation.X) if validation is not None else None
            metrics = dict(on_epoch(epoch, train_loss, val_pred)) if on_epoch is not None else {}
            score = float(metrics.get("val_crop_f1", -train_loss))
            history.append(score)
            if score > best[0] or best[2] is None:
                best, waited = (
                    (score, epoch, copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})),
                    0,
                )
            else:
                waited += 1
                if self.patience is not None and waited >= self.patience:
                    log.info("unet: early stop after epoch %d (best epoch %d)", epoch, best[1])
                    break
        net.load_state_dict(best[2])
        self._state = best[2]
        net.eval()
        self._net = net
        params = {
            "best_epoch": best[1],
            "epochs_run": len(history),
            "device": str(dev),
            "n_parameters": int(sum(p.numel() for p in net.parameters())),
        }
        metrics_out = {
            "fit_epochs": float(len(history)),
            "best_epoch": float(best[1]),
            "train_seconds_per_epoch": (time.perf_counter() - t0) / max(len(history), 1),
        }
        if validation is not None:
            metrics_out["val_best_crop_f1"] = float(best[0])
        return FitResult(params=params, metrics=metrics_out)

    # -- prediction --------------------------------------------------------------------------------------
    def _ready(self) -> Any:
        if self._net is None:
            if self._state is None or self.n_features is None:
                raise PluginError("classifier unet: predict before fit")
            net = self._build(self.n_features)
            net.load_state_dict(self._state)
            net.to(self._device())
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
        with torch.inference_mode():
            out = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev))[:, 0]
        return out.cpu().numpy()[:, :h, :w]

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
        n = int(self.threads or task_threads())
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return (self._logits(self._normalise(features[None]))[0] > 0).astype(np.uint8)

    # -- pickling: options, normalisation and the best epoch's weights; the network is rebuilt -----------
    def __getstate__(self) -> dict[str, Any]:
        torch, _ = _deep()
        state = {k: v for k, v in self.__dict__.items() if k not in ("_net", "_state")}
        buf = io.BytesIO()
        torch.save(self._state, buf)
        state["_weights_bytes"] = buf.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        torch, _ = _deep()
        raw = state.pop("_weights_bytes", None)
        self.__dict__.update(state)
        self._net = None
        self._state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True) if raw else None

    def save_weights(self, path: Path) -> Path:
        """Write the kept (best epoch's) weights as a PyTorch state dict, loadable as ``classifier.weights``."""
        torch, _ = _deep()
        if self._state is None:
            raise PluginError("classifier unet: no fitted weights to save")
        torch.save(self._state, path)
        return path


def _recalibrate_batchnorm(net: Any, X: np.ndarray, batch_size: int, dev: Any) -> None:
    """Re-estimate the batch-norm statistics of the current weights on the training patches (a plain
    average over the batches, no gradient): after few steps the running averages still hold the
    statistics of earlier weights and skew evaluation-mode predictions."""
    torch, _ = _deep()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            net(torch.from_numpy(np.ascontiguousarray(X[s : s + batch_size])).to(dev))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def _augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90-degree rotations of each patch (the same for its features and labels)."""
    xs, ys = [], []
    for xi, yi in zip(x, y):
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        xi, yi = np.rot90(xi, k, axes=(-2, -1)), np.rot90(yi, k, axes=(-2, -1))
        if flip:
            xi, yi = xi[..., ::-1], yi[..., ::-1]
        xs.append(xi)
        ys.append(yi)
    return np.stack(xs), np.stack(ys)


@hookimpl
def cropseg_register_patch_models(register):
    register("unet", UNet)
