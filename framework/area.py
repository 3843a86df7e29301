"""Good-practice area estimation: stratified estimators of accuracy and area (numpy only).

Implements the estimators recommended by Olofsson, Foody, Herold, Stehman, Woodcock & Wulder (2014),
"Good practices for estimating area and assessing accuracy of land change", Remote Sensing of
Environment 148: 42-57 (after Cochran 1977, Sampling Techniques, ch. 5, and Stehman 2014), for a
stratified random sample whose strata are the map classes:

* sample size for a target standard error (Cochran's formula for stratified random sampling,
  Olofsson et al. 2014 eq. 13): ``n = (sum_i W_i S_i)^2 / (S(O)^2 + sum_i W_i S_i^2 / N)`` with
  ``S_i = sqrt(U_i (1 - U_i))`` from the anticipated user's accuracy ``U_i`` of stratum ``i``. For a
  two-class (crop / non-crop) map this is also the standard error of the estimated crop-area
  proportion: in either stratum the indicator "reference is crop" has variance ``U_i (1 - U_i)``;
* the error matrix in estimated area proportions ``p_ij = W_i n_ij / n_i.`` (rows: map class =
  stratum ``i`` with area weight ``W_i = A_i / A``; columns: reference class ``j``);
* overall accuracy ``O = sum_j p_jj`` with ``V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)``;
  user's accuracy ``U_i = p_ii / p_i.`` with ``V(U_i) = U_i (1 - U_i) / (n_i. - 1)``; producer's accuracy
  ``P_j = p_jj / p_.j`` with the variance of Olofsson et al. (2013, 2014) written with the estimated
  reference-class totals ``N_.j = sum_i N_i n_ij / n_i.``;
* the stratified estimator of the area proportion of reference class ``j``
  ``p_.j = sum_i W_i n_ij / n_i.`` with ``SE(p_.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))``;
  error-adjusted area ``A_j = A p_.j`` with ``SE(A_j) = A SE(p_.j)``; 95 % confidence interval
  ``A_j +- 1.96 SE(A_j)``.

As in the paper, the finite population correction is omitted (negligible when strata hold far more
pixels than sample points) and intervals are Wald intervals ``estimate +- 1.96 SE``, clipped to the range the
quantity can take: [0, 1] for accuracies and area proportions, [0, total area] for areas (the estimates and
SEs themselves are the paper's, unclipped). A Wald interval degenerates when a stratum's sample shows no
error (``U_i`` of 0 or 1 gives ``SE = 0``): :meth:`AreaEstimate.warnings` names such strata, whose intervals
are too narrow. A quantity the sample cannot define (the user's accuracy of a map class with no mapped
pixel, the producer's accuracy of a reference class the sample never found) is NaN, reported as undefined.

Allocations: ``proportional``, ``equal``, ``minimum`` (at least ``minimum`` per stratum, the rest
proportional) and ``neyman`` (``n_i`` proportional to ``W_i S_i``, the allocation that minimises the SE of the
estimated proportion for a given ``n``, which eq. 13 assumes: with it the sample size of eq. 13 reaches the
target SE under the anticipated accuracies). :func:`design_se` gives the SE a design is expected to reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, CropsegError

Z95 = 1.96
ALLOCATIONS = ("proportional", "equal", "minimum", "neyman")


class SampleError(CropsegError, ValueError):
    """A reference sample cannot support the estimators (too few labelled points in a stratum...)."""


def cochran_sample_size(
    weights: Sequence[float] | np.ndarray,
    user_accuracies: Sequence[float] | np.ndarray,
    target_se: float,
    population: float | None = None,
) -> int:
    """Total sample size for stratified random sampling that gives standard error ``target_se`` of the
    estimated overall accuracy (Olofsson et al. 2014 eq. 13, Cochran 1977 eq. 5.25), which for a
    two-class map is also the standard error of the estimated area proportion of either class.

    ``weights``: mapped area proportions ``W_i`` of the strata; ``user_accuracies``: anticipated ``U_i``;
    ``population``: number of pixels ``N`` (``None``: infinite, the usual approximation)."""
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(user_accuracies, dtype=np.float64)
    if w.shape != u.shape or w.ndim != 1 or not len(w):
        raise ConfigError("sample size: one anticipated user's accuracy per stratum is needed")
    if np.any(u < 0) or np.any(u > 1):
        raise ConfigError(f"sample size: anticipated user's accuracies must lie in [0, 1], got {u.tolist()}")
    if not 0 < target_se < 1:
        raise ConfigError(f"sample size: the target standard error must lie in (0, 1), got {target_se}")
    w = w / w.sum()
    s = np.sqrt(u * (1 - u))
    denom = target_se**2 + (float(np.sum(w * s**2)) / population if population else 0.0)
    return max(1, math.ceil(float(np.sum(w * s)) ** 2 / denom))


def design_se(
    weights: Sequence[float] | np.ndarray,
    user_accuracies: Sequence[float] | np.ndarray,
    n_per_stratum: Sequence[int] | np.ndarray,
    population: float | None = None,
) -> float:
    """Standard error of the estimated area proportion (and overall accuracy) that a stratified sample of
    ``n_per_stratum`` points is expected to give when the strata's user's accuracies are
    ``user_accuracies``: ``sqrt(sum_i W_i^2 S_i^2 / n_i - sum_i W_i S_i^2 / N)`` with ``S_i^2 = U_i (1 - U_i)``
    (Cochran 1977 eq. 5.6; the second term, the finite population correction, only with ``population``
    ``N``). With Neyman allocation of the sample size of :func:`cochran_sample_size` (same ``population``)
    it equals the target SE up to the rounding of ``n_i``; other allocations give more."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    u = np.asarray(user_accuracies, dtype=np.float64)
    n = np.asarray(n_per_stratum, dtype=np.float64)
    live = w > 0
    if np.any(n[live] <= 0):
        return float("inf")
    s2 = u[live] * (1 - u[live])
    var = float(np.sum(w[live] ** 2 * s2 / n[live])) - (float(np.sum(w[live] * s2)) / population if population else 0.0)
    return float(np.sqrt(max(var, 0.0)))


def allocate(
    n: int,
    sizes: Sequence[int] | np.ndarray,
    method: str = "proportional",
    minimum: int = 50,
    user_accuracies: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Split a total sample size ``n`` among strata of ``sizes`` pixels.

    ``proportional``: ``n_i`` proportional to the stratum area; ``equal``: the same number per stratum;
    ``minimum``: at least ``minimum`` points per stratum (Olofsson et al. 2014 recommend 50-100 for
    small classes), the rest proportional to area; ``neyman``: ``n_i`` proportional to ``W_i S_i`` with
    ``S_i = sqrt(U_i (1 - U_i))`` from the anticipated ``user_accuracies`` (Cochran 1977 eq. 5.26; when
    every ``S_i`` is 0, proportional). Largest-remainder rounding keeps the total ``n``; no stratum gets
    more points than it has pixels or (when it has any pixel) fewer than 2."""
    sizes_a = np.asarray(sizes, dtype=np.int64)
    if method not in ALLOCATIONS:
        raise ConfigError(f"allocation: one of {', '.join(ALLOCATIONS)}, got {method!r}")
    neyman = np.zeros(len(sizes_a))
    if method == "neyman":
        if user_accuracies is None or len(user_accuracies) != len(sizes_a):
            raise ConfigError("neyman allocation: one anticipated user's accuracy per stratum is needed")
        u = np.asarray(user_accuracies, dtype=np.float64)
        if np.any(u < 0) or np.any(u > 1):
            raise ConfigError(f"neyman allocation: anticipated user's accuracies must lie in [0, 1], got {u.tolist()}")
        neyman = np.asarray(sizes_a * np.sqrt(u * (1 - u)), dtype=np.float64)
    if n < 2 * int(np.count_nonzero(sizes_a)):
        raise ConfigError(f"sample size {n}: at least 2 points per non-empty stratum are needed")
    if n > int(sizes_a.sum()):
        raise ConfigError(f"sample size {n}: more than the {int(sizes_a.sum())} pixels to sample")
    live = sizes_a > 0
    if method == "equal":
        share = live / live.sum() * n
    elif method == "neyman" and neyman.sum() > 0:
        share = neyman / neyman.sum() * n
    elif method in ("proportional", "neyman"):
        share = sizes_a / sizes_a.sum() * n
    else:
        floor_n = np.where(live, minimum, 0)
        if floor_n.sum() >= n:
            share = live / live.sum() * n
        else:
            share = floor_n + sizes_a / sizes_a.sum() * (n - floor_n.sum())
    out = _round_keep_total(share, n)
    # at least 2 per non-empty stratum, never more than the stratum holds; move the difference around
    for _ in range(len(out) * 4):
        low = live & (out < 2)
        high = out > sizes_a
        if not low.any() and not high.any():
            break
        out = np.where(low, 2, np.minimum(out, sizes_a))
        diff = n - int(out.sum())
        room = np.where(live, sizes_a - out, 0) if diff > 0 else np.where(live, out - 2, 0)
        order = np.argsort(-room)
        for i in order:
            if diff == 0:
                break
            step = min(abs(diff), int(room[i]))
            out[i] += step if diff > 0 else -step
            diff += -step if diff > 0 else step
    return out.astype(np.int64)


def _round_keep_total(share: np.ndarray, n: int) -> np.ndarray:
    base = np.floor(share).astype(np.int64)
    rest = n - int(base.sum())
    if rest > 0:
        base[np.argsort(-(share - base), kind="stable")[:rest]] += 1
    return base


@dataclass
class AreaEstimate:
    """Stratified estimates from a labelled sample (strata = map classes).

    ``counts[i, j]``: sample points in map class ``i`` whose reference class is ``j``; ``mapped_pixels[i]``:
    pixels of map class ``i`` (``N_i``); ``pixel_area_ha``: area of one pixel (``None``: proportions only).
    """

    classes: list[str]
    counts: np.ndarray
    mapped_pixels: np.ndarray
    pixel_area_ha: float | None = None
    z: float = Z95
    #: sample points left out, by reason, and the reference codes that were neither crop nor non-crop
    excluded: dict[str, int] = field(default_factory=dict)
    other_codes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.float64)
        self.mapped_pixels = np.asarray(self.mapped_pixels, dtype=np.float64)
        q = len(self.classes)
        if self.counts.shape != (q, q) or self.mapped_pixels.shape != (q,):
            raise ValueError(f"counts must be {q}x{q} and mapped_pixels of length {q}")
        n_i = self.counts.sum(axis=1)
        thin = [
            f"{c!r} ({int(k)} labelled point{'s' if k != 1 else ''})"
            for c, k, N in zip(self.classes, n_i, self.mapped_pixels)
            if N > 0 and k < 2
        ]
        if thin:
            raise SampleError(
                f"stratum {', '.join(thin)}: at least 2 labelled points per mapped class are "
                "needed for the variance estimators"
            )

    # -- the estimators ---------------------------------------------------------------------------
    @property
    def n_i(self) -> np.ndarray:
        """Sample size per stratum (``n_i.``)."""
        return self.counts.sum(axis=1)

    @property
    def weights(self) -> np.ndarray:
        """Mapped area proportions ``W_i = N_i / N``."""
        return self.mapped_pixels / self.mapped_pixels.sum()

    @property
    def _rows(self) -> np.ndarray:
        """``n_ij / n_i.`` (0 for strata without pixels or points)."""
        n_i = self.n_i[:, None]
        return np.divide(self.counts, n_i, out=np.zeros_like(self.counts), where=n_i > 0)

    @property
    def proportions(self) -> np.ndarray:
        """Error matrix in estimated area proportions ``p_ij = W_i n_ij / n_i.``."""
        return self.weights[:, None] * self._rows

    @property
    def area_proportion(self) -> np.ndarray:
        """Stratified estimate of each reference class's area proportion ``p_.j``."""
        return self.proportions.sum(axis=0)

    @property
    def area_proportion_se(self) -> np.ndarray:
        """``SE(p_.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))``."""
        w2 = self.weights[:, None] ** 2
        d = np.maximum(self.n_i - 1, 1)[:, None]
        return np.sqrt(np.sum(w2 * self._rows * (1 - self._rows) / d, axis=0))

    @property
    def user_accuracy(self) -> np.ndarray:
        """``U_i = n_ii / n_i.``; NaN (undefined) for a map class without sample points (no mapped pixel)."""
        return np.where(self.n_i > 0, np.diag(self._rows), np.nan)

    @property
    def user_accuracy_se(self) -> np.ndarray:
        u = self.user_accuracy
        return np.sqrt(u * (1 - u) / np.maximum(self.n_i - 1, 1))

    @property
    def overall_accuracy(self) -> float:
        return float(np.trace(self.proportions))

    @property
    def overall_accuracy_se(self) -> float:
        u = np.nan_to_num(self.user_accuracy)  # an empty stratum has W_i = 0: it adds nothing
        return float(np.sqrt(np.sum(self.weights**2 * u * (1 - u) / np.maximum(self.n_i - 1, 1))))

    @property
    def producer_accuracy(self) -> np.ndarray:
        p = self.area_proportion
        return np.divide(np.diag(self.proportions), p, out=np.full_like(p, np.nan), where=p > 0)

    @property
    def producer_accuracy_se(self) -> np.ndarray:
        """Olofsson et al. (2014) variance of producer's accuracy with ``N_.j = sum_i N_i n_ij / n_i.``."""
        N, rows, n_i = self.mapped_pixels, self._rows, self.n_i
        d = np.maximum(n_i - 1, 1)
        u, pa = np.nan_to_num(self.user_accuracy), self.producer_accuracy
        n_j = np.sum(N[:, None] * rows, axis=0)
        out = np.full(len(self.classes), np.nan)
        for j in range(len(self.classes)):
            if n_j[j] <= 0:
                continue
            own = N[j] ** 2 * (1 - pa[j]) ** 2 * u[j] * (1 - u[j]) / d[j]
            others = sum(N[i] ** 2 * rows[i, j] * (1 - rows[i, j]) / d[i] for i in range(len(N)) if i != j)
            out[j] = math.sqrt((own + pa[j] ** 2 * others) / n_j[j] ** 2)
        return out

    # -- areas --------------------------------------------------------------------------------------
    @property
    def total_ha(self) -> float | None:
        return None if self.pixel_area_ha is None else float(self.mapped_pixels.sum() * self.pixel_area_ha)

    def area_ha(self) -> np.ndarray:
        """Error-adjusted area of each reference class (ha)."""
        return self.area_proportion * self._total()

    def area_se_ha(self) -> np.ndarray:
        return self.area_proportion_se * self._total()

    def mapped_ha(self) -> np.ndarray:
        return self.mapped_pixels * (self.pixel_area_ha or float("nan"))

    def _total(self) -> float:
        if self.pixel_area_ha is None:
            raise ValueError("no pixel area: areas in hectares are unknown (use area_proportion)")
        return float(self.mapped_pixels.sum() * self.pixel_area_ha)

    def ci(
        self, estimate: np.ndarray | float, se: np.ndarray | float, bounds: tuple[float, float] | None = None
    ) -> tuple[Any, Any]:
        """Wald interval ``estimate +- z SE`` (z = 1.96 for 95 %), clipped to ``bounds`` when given
        (``(0, 1)`` for accuracies and proportions, ``(0, total_ha)`` for areas)."""
        lo = np.asarray(estimate) - self.z * np.asarray(se)
        hi = np.asarray(estimate) + self.z * np.asarray(se)
        if bounds is not None:
            lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
        return lo, hi

    def area_ci_ha(self) -> tuple[np.ndarray, np.ndarray]:
        """95 % interval of each class's error-adjusted area (ha), clipped to [0, total area]."""
        return self.ci(self.area_ha(), self.area_se_ha(), (0.0, self._total()))

    def warnings(self) -> list[str]:
        """Strata whose sample shows no error, and area proportions estimated at 0 or 1: there the Wald
        variance is 0 (or too small), so their intervals are too narrow; one sentence per case."""
        out = []
        for i, c in enumerate(self.classes):
            n, ok = int(self.n_i[i]), self.counts[i, i]
            if n and self.mapped_pixels[i] > 0 and ok in (0, n):
                what = "agree with the map (no error observed)" if ok == n else "disagree with the map"
                out.append(
                    f"stratum {c!r}: all {n} sample points {what}: its user's accuracy has SE 0, so its interval "
                    "and its share of the area intervals are too narrow (a larger sample of it would show errors)"
                )
        for j, c in enumerate(self.classes):
            pj = float(self.area_proportion[j])
            if pj in (0.0, 1.0):
                out.append(
                    f"class {c!r}: estimated area proportion {pj:.0f} with SE 0: the sample never found "
                    f"{'it' if pj == 0 else 'another class'}, so its area interval is too narrow"
                )
        return out

    # -- reporting ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (``None`` for an undefined quantity, with a note)."""

        def num(v: Any) -> float | None:
            return None if not np.isfinite(v) else float(v)

        def lst(a: np.ndarray) -> list[float | None]:
            return [num(v) for v in np.asarray(a, dtype=np.float64)]

        def entry(e: float, se: float, bounds: tuple[float, float], undefined: str = "") -> dict[str, Any]:
            if not np.isfinite(e):
                return {"estimate": None, "se": None, "ci95": None, "note": f"undefined: {undefined}"}
            lo, hi = self.ci(e, se, bounds)
            return {"estimate": float(e), "se": num(se), "ci95": [num(lo), num(hi)]}

        out: dict[str, Any] = {
            "method": "stratified estimators, Olofsson et al. 2014 (strata = map classes), 95% CI = estimate "
            f"+- {self.z} SE (Wald), clipped to [0, 1] for accuracies and proportions and to [0, total area] "
            "for areas",
            "classes": list(self.classes),
            "sample_counts": self.counts.astype(int).tolist(),
            "sample_size": int(self.counts.sum()),
            "stratum_sample_sizes": self.n_i.astype(int).tolist(),
            "mapped_pixels": self.mapped_pixels.astype(int).tolist(),
            "weights": lst(self.weights),
            "error_matrix_proportions": [lst(r) for r in self.proportions],
            "overall_accuracy": entry(self.overall_accuracy, self.overall_accuracy_se, (0.0, 1.0)),
            "excluded_points": dict(self.excluded),
            "other_reference_codes": dict(self.other_codes),
            "warnings": self.warnings(),
        }
        per: dict[str, Any] = {}
        ua, ua_se, pa, pa_se = (
            self.user_accuracy,
            self.user_accuracy_se,
            self.producer_accuracy,
            self.producer_accuracy_se,
        )
        for k, c in enumerate(self.classes):
            per[c] = {
                "user_accuracy": entry(ua[k], ua_se[k], (0.0, 1.0), "no mapped pixel of this class"),
                "producer_accuracy": entry(pa[k], pa_se[k], (0.0, 1.0), "the sample holds no point of this class"),
                "area_proportion": entry(self.area_proportion[k], self.area_proportion_se[k], (0.0, 1.0)),
                "mapped_proportion": float(self.weights[k]),
            }
            if self.pixel_area_ha is not None:
                per[c]["area_ha"] = entry(self.area_ha()[k], self.area_se_ha()[k], (0.0, self._total()))
                per[c]["mapped_area_ha"] = float(self.mapped_ha()[k])
        out["classes_detail"] = per
        out["pixel_area_ha"] = self.pixel_area_ha
        out["total_area_ha"] = self.total_ha
        return out

    def text(self) -> str:
        """A plain-text report: error matrix in area proportions, accuracies and areas with 95 % CIs."""
        q = len(self.classes)
        w = max(12, *(len(c) for c in self.classes))
        lines = [
            (
                f"stratified estimates (Olofsson et al. 2014) from {int(self.counts.sum())} labelled points; "
                f"95% CI = estimate +- {self.z} SE, clipped to [0, 1] (accuracies) and [0, total] (areas)"
            )
        ]
        if self.excluded:
            lines.append(
                "excluded points: "
                + ", ".join(f"{k} {v}" for k, v in self.excluded.items())
                + (
                    " (codes: " + ", ".join(f"{k!r} x{v}" for k, v in self.other_codes.items()) + ")"
                    if self.other_codes
                    else ""
                )
            )
        lines += [
            "",
            "error matrix in estimated area proportions (rows: map, columns: reference)",
            " " * w + "".join(f"{c:>{w}}" for c in self.classes) + f"{'total':>{w}}{'n':>8}",
        ]
        p = self.proportions
        for i in range(q):
            lines.append(
                f"{self.classes[i]:<{w}}"
                + "".join(f"{p[i, j]:>{w}.4f}" for j in range(q))
                + f"{p[i].sum():>{w}.4f}{int(self.n_i[i]):>8d}"
            )
        lines.append(
            f"{'total':<{w}}"
            + "".join(f"{v:>{w}.4f}" for v in p.sum(axis=0))
            + f"{1.0:>{w}.4f}"
            + f"{int(self.counts.sum()):>8d}"
        )

        def acc(e: float, se: float) -> str:
            if not np.isfinite(e):
                return f"{'undefined':>28}"
            lo, hi = self.ci(e, se, (0.0, 1.0))
            return f"{e:>6.3f} ({float(lo):.3f}-{float(hi):.3f}) SE {se:.3f}"

        lines += [
            "",
            f"overall accuracy  {acc(self.overall_accuracy, self.overall_accuracy_se).strip()}",
            "",
            f"{'class':<{w}}  {'user acc. (95% CI) SE':>28}  {'producer acc. (95% CI) SE':>28}",
        ]
        ua, ua_se, pa, pa_se = (
            self.user_accuracy,
            self.user_accuracy_se,
            self.producer_accuracy,
            self.producer_accuracy_se,
        )
        for k, c in enumerate(self.classes):
            lines.append(f"{c:<{w}}  {acc(ua[k], ua_se[k]):>28}  {acc(pa[k], pa_se[k]):>28}")
        if self.pixel_area_ha is not None:
            lines += [
                "",
                (f"{'class':<{w}}  {'mapped ha':>14}  {'error-adjusted ha':>18}  {'SE ha':>12}  {'95% CI ha':>27}"),
            ]
            a, s, m = self.area_ha(), self.area_se_ha(), self.mapped_ha()
            lo, hi = self.area_ci_ha()
            for k, c in enumerate(self.classes):
                lines.append(
                    f"{c:<{w}}  {m[k]:>14,.2f}  {a[k]:>18,.2f}  {s[k]:>12,.2f}  {lo[k]:>12,.2f} - {hi[k]:>12,.2f}"
                )
        notes = self.warnings()
        if notes:
            lines += ["", *(f"warning: {n}" for n in notes)]
        return "\n".join(lines)


def error_counts(
    map_classes: Sequence[int] | np.ndarray, reference_classes: Sequence[int] | np.ndarray, q: int
) -> np.ndarray:
    """``q`` x ``q`` sample counts (rows map class, columns reference class) from integer class codes."""
    m = np.asarray(map_classes, dtype=np.int64)
    r = np.asarray(reference_classes, dtype=np.int64)
    return np.bincount(m * q + r, minlength=q * q)[: q * q].reshape(q, q)


__all__ = [
    "ALLOCATIONS",
    "Z95",
    "AreaEstimate",
    "SampleError",
    "allocate",
    "cochran_sample_size",
    "design_se",
    "error_counts",
]
