"""K multinomial logistic-regression heads on frozen features, trained as one batched computation.

:func:`train_heads` trains the K heads of an audit, each on its own subset of one pool, with a
few large matrix multiplications per iteration and no Python loop over models; settings are
:class:`HeadConfig` (standardisation, L2, optimiser, stopping). :func:`head_logits` and
:func:`head_predictions` (:mod:`.apply`) apply the result (standardisation folded into
``x @ W_k + b_k``); :func:`train_head_single` trains one head alone, the reference the batched
result equals.

Contract (objective, standardisation, stopping, optimisers): docs/design/training.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from miascale.errors import MiascaleError
from miascale.training.adam import adam
from miascale.training.apply import head_logits, head_predictions
from miascale.training.lbfgs import PHI_GRAD_GUARD, LbfgsOptions, LbfgsResult, minimize
from miascale.training.objective import STD_FLOOR, HeadObjective
from miascale.training.span import PoolSpan, pool_span

__all__ = [
    "STD_FLOOR",
    "HeadConfig",
    "TrainedHeads",
    "head_logits",
    "head_predictions",
    "train_head_single",
    "train_heads",
]


_OPTIMIZERS = ("lbfgs", "adam")
STANDARDIZE = ("pool", "subset", "none")
"""Feature standardisation recipes of a head (docs/design/training.md); the first is the default."""
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "mixed": torch.float32}


@dataclass(frozen=True)
class HeadConfig:
    """Settings of the head objective and its optimiser.

    Attributes:
        l2: L2 strength on the weights (not the bias) of the head objective, on standardised
            features. Default 1e-3: a mild regulariser that keeps the problem strictly convex and
            reasonably conditioned; it equals scikit-learn's default ``C=1`` at ``n_k = 1000``
            (``C = 1/(l2*n_k)``). ``l2 = 0`` is allowed but then the optimum may not exist
            (separable data) and heads will typically not converge.
        optimizer: ``"lbfgs"`` (exact, full-batch, default) or ``"adam"`` (minibatch).
        max_iter: L-BFGS iterations at most (lbfgs only).
        tol: a head has converged when the max-abs gradient component is below ``tol``. The
            default 1e-6 gives weights within about 1e-3 (relative to the largest weight)
            and probabilities within about 1e-5 of the exact optimum at ``l2=1e-3`` on
            1280-dim features; lower it for tighter agreement.
        history: L-BFGS memory (pairs kept per head).
        epochs, batch_size, learning_rate: Adam only.
        seed: seeds the Adam minibatch order (lbfgs is deterministic and ignores it).
        phi_tol: L-BFGS only: a head also stops once its LiRA statistics ``phi`` on the pool
            moved by at most ``phi_tol`` times their spread across models in each of 3
            consecutive iterations (needs K >= 4 heads; 0 turns the rule off, so that only
            ``tol`` stops a head). Its effect against the exact optimum: benchmarks/README.md.
        dtype: precision of the two big matrix multiplications and the per-example work between
            them. ``"mixed"`` (default) runs float32 until rounding stops a line search, then
            float64 (outside the pool's span the gradient GEMM runs in bfloat16 on CPUs with
            native bfloat16 arithmetic, ``objective.native_bf16``; the objective, phi and line
            searches stay float32); ``"float64"`` throughout reaches ``tol=1e-6`` tightly;
            ``"float32"`` throughout is faster per iteration, but its gradient is only accurate
            to about 1e-6 relative. The parameters are float64; L-BFGS keeps its vector state
            (gradients, directions, memory) in the GEMMs' precision.
        precondition: L-BFGS only: use the scaled Böhning-bound preconditioner described in
            docs/design/training.md (default; outside the pool's span its top block is the
            start head's exact curvature). ``False`` gives plain L-BFGS with ``H0 = gamma*I``;
            both reach the same optimum.
        standardize: ``"pool"`` (default), ``"subset"`` or ``"none"``: whose statistics set the
            feature scale (docs/design/training.md, objective item 1).
    """

    l2: float = 1e-3
    optimizer: str = "lbfgs"
    max_iter: int = 1000
    tol: float = 1e-6
    history: int = 10
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    dtype: str = "mixed"
    precondition: bool = True
    phi_tol: float = 0.05
    standardize: str = "pool"

    def __post_init__(self) -> None:
        if self.standardize not in STANDARDIZE:
            raise MiascaleError(
                f"HeadConfig.standardize must be one of {STANDARDIZE} (whose statistics set the "
                f"feature scale: the pool's, each model's own subset, or none), got "
                f"{self.standardize!r}."
            )
        if not (isinstance(self.l2, int | float) and math.isfinite(self.l2) and self.l2 >= 0):
            raise MiascaleError(f"HeadConfig.l2 must be a finite number >= 0, got {self.l2!r}.")
        if self.optimizer not in _OPTIMIZERS:
            raise MiascaleError(
                f"HeadConfig.optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}."
            )
        if self.dtype not in _DTYPES:
            raise MiascaleError(
                f"HeadConfig.dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}."
            )
        for name in ("max_iter", "history", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MiascaleError(f"HeadConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("tol", "learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise MiascaleError(f"HeadConfig.{name} must be a number > 0, got {value!r}.")
        if not (
            isinstance(self.phi_tol, int | float)
            and math.isfinite(self.phi_tol)
            and self.phi_tol >= 0
        ):
            raise MiascaleError(f"HeadConfig.phi_tol must be a number >= 0, got {self.phi_tol!r}.")
        if not isinstance(self.precondition, bool):
            raise MiascaleError(
                f"HeadConfig.precondition must be a bool, got {self.precondition!r}."
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MiascaleError(f"HeadConfig.seed must be an integer, got {self.seed!r}.")


@dataclass(frozen=True)
class TrainedHeads:
    """K trained heads in the ORIGINAL feature space: ``logits = x @ weights[k] + bias[k]``.

    Attributes:
        weights: (K, D, C) float64.
        bias: (K, C) float64.
        n_iter: optimiser iterations run (L-BFGS iterations, or Adam steps).
        converged: (K,) bool, final max-abs gradient below ``tol`` or stopped by the phi rule.
        final_grad_norm: (K,) float64 max-abs gradient component at the returned parameters
            (standardised space).
        phi_stopped: (K,) bool, stopped by the phi rule (``HeadConfig.phi_tol``) above ``tol``.
        span: heads trained in the pool's span (:mod:`.span`): that span and the heads on its
            coordinates, ``((K, r, C), (K, C))``; :func:`head_logits` then computes the same
            logits through the span when that is cheaper. None otherwise.
    """

    weights: np.ndarray
    bias: np.ndarray
    n_iter: int
    converged: np.ndarray
    final_grad_norm: np.ndarray
    phi_stopped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    span: tuple[PoolSpan, tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def n_models(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.weights.shape[2])


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_features(features: object, what: str = "features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise MiascaleError(f"{what} must be a 2-D array (examples, dims), got shape {x.shape}.")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise MiascaleError(f"{what} must be non-empty, got shape {x.shape}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise MiascaleError(f"{what} must be real numbers, got dtype {x.dtype}.")
    x = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        rows = int(bad.any(axis=1).sum())
        raise MiascaleError(
            f"{what} contain {n_bad} non-finite value(s) (NaN or inf) in {rows} example(s); "
            "re-extract or clean the features before training."
        )
    return x


def _check_labels(labels: object, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise MiascaleError(f"labels must have shape ({n},) to match features, got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise MiascaleError(f"labels must be integers, got dtype {y.dtype}.")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise MiascaleError(
            f"labels must lie in [0, {n_classes}) for n_classes={n_classes}, "
            f"got range [{y.min()}, {y.max()}]."
        )
    return y.astype(np.int64, copy=False)


def check_in_mask(in_mask: object, n: int) -> np.ndarray:
    """The (K, n) membership mask as bool (0/1 accepted); one row per model, K ≥ 1."""
    mask = np.asarray(in_mask)
    if mask.ndim != 2 or mask.shape[1] != n or mask.shape[0] == 0:
        raise MiascaleError(
            f"in_mask must have shape (K, {n}) with K >= 1 (one row per model), got {mask.shape}."
        )
    if mask.dtype != np.bool_:
        if not np.isin(mask, (0, 1)).all():
            raise MiascaleError("in_mask must be boolean (or 0/1).")
        mask = mask.astype(bool)
    return mask


RAW_SCALE_RANGE = (1e-6, 1e6)
"""With ``standardize="none"`` the per-feature std of the pool must lie in this range (the
objective's l2 and tolerance are in feature units; outside it the optimum is not scale-free)."""


def _check_raw_scale(x: np.ndarray) -> None:
    sd = x.std(axis=0)
    live = sd[sd > 0]
    lo, hi = RAW_SCALE_RANGE
    if live.size and (live.max() > hi or live.min() < lo):
        raise MiascaleError(
            f"With standardize='none' the heads train on raw features, whose scale then sets the "
            f"strength of the l2 penalty and the convergence tolerance; these features have "
            f"per-feature standard deviations from {live.min():.3g} to {live.max():.3g}, outside "
            f"the supported range [{lo:g}, {hi:g}]. Use standardize='pool' (the default, "
            f"scale-invariant) or rescale the features."
        )


def _check_n_classes(n_classes: object) -> int:
    if not isinstance(n_classes, int | np.integer) or isinstance(n_classes, bool) or n_classes < 2:
        raise MiascaleError(f"n_classes must be an integer >= 2, got {n_classes!r}.")
    return int(n_classes)


def _check_config(config: object) -> HeadConfig:
    if not isinstance(config, HeadConfig):
        raise MiascaleError(f"config must be a HeadConfig, got {type(config).__name__}.")
    return config


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def train_heads(
    features: np.ndarray,
    labels: np.ndarray,
    in_mask: np.ndarray,
    n_classes: int,
    config: HeadConfig = HeadConfig(),
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], object] | None = None,
) -> TrainedHeads:
    """Train K heads at once; head k trains on ``features[in_mask[k]]`` (docs/design/training.md).

    Args:
        features: (N, D) real features of the pool (any float dtype; no NaN/inf).
        labels: (N,) integer labels in ``[0, n_classes)``.
        in_mask: (K, N) bool, ``in_mask[k, i]`` is True when example i trains model k. Empty
            subsets and subsets missing some classes are allowed (the objective stays defined).
        n_classes: number of classes C >= 2.
        config: objective and optimiser settings.
        device: torch device for the computation.
        progress: optional ``progress(iteration, max_grad_norm)`` called after every L-BFGS
            iteration (or every Adam epoch).

    Returns:
        :class:`TrainedHeads` with weights (K, D, C) and bias (K, C) in the original feature
        space.
    """
    config = _check_config(config)
    n_classes = _check_n_classes(n_classes)
    x = _check_features(features)
    if config.standardize == "none":
        _check_raw_scale(x)
    n = x.shape[0]
    y = _check_labels(labels, n, n_classes)
    mask = check_in_mask(in_mask, n)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MiascaleError(f"unknown torch device {device!r}: {exc}") from exc
    with torch.no_grad():
        span = pool_span(x, config.standardize) if config.optimizer == "lbfgs" else None
        if span is not None:
            return _train_in_span(span, y, mask, n_classes, config, dev, progress)
        lbfgs = config.optimizer == "lbfgs"
        prob = HeadObjective(
            x, y, mask, n_classes, config.l2, _DTYPES[config.dtype], dev, config.standardize,
            bf16_gradient=lbfgs and config.dtype == "mixed",  # where the CPU has it
        )  # fmt: skip
        phi_stopped = torch.zeros(mask.shape[0], dtype=torch.bool)
        if lbfgs:
            res = _lbfgs(prob, x, y, config, _lbfgs_options(config), progress)
            theta, n_iter, gn, phi_stopped = res.theta, res.n_iter, res.grad_norm, res.phi_stopped
        else:
            theta, n_iter, gn = adam(prob, mask, config, progress)
            # The objective is invariant to a common shift of the C biases; Adam's per-coordinate
            # scaling can introduce one, so return the zero-sum representative (L-BFGS keeps it).
            dc = prob.d * prob.c
            theta[:, dc:] -= theta[:, dc:].mean(dim=1, keepdim=True)
        weights, bias = prob.to_original(theta)
    gn_np = gn.cpu().numpy().astype(np.float64)
    phi_np = phi_stopped.cpu().numpy().astype(bool)
    return TrainedHeads(
        weights=weights,
        bias=bias,
        n_iter=int(n_iter),
        converged=(gn_np < config.tol) | phi_np,
        final_grad_norm=gn_np,
        phi_stopped=phi_np,
    )


def _train_in_span(
    span: PoolSpan,
    y: np.ndarray,
    mask: np.ndarray,
    n_classes: int,
    config: HeadConfig,
    dev: torch.device,
    progress: Callable[[int, float], object] | None,
) -> TrainedHeads:
    """The same heads, trained on the pool's coordinates in its span (:mod:`.span`)."""
    dtype = _DTYPES[config.dtype]
    prob = HeadObjective(span.coords, y, mask, n_classes, config.l2, dtype, dev, "none")
    opts = replace(_lbfgs_options(config), tol=span.reduced_tol(config.tol))
    config = replace(config, standardize="none")
    res = _lbfgs(prob, span.coords, y, config, opts, progress, curvature=False)
    reduced = prob.to_original(res.theta)
    weights, bias = span.lift(*reduced)
    gn = span.grad_norm(prob.value_and_grad(res.theta)[1], n_classes)
    phi = res.phi_stopped.cpu().numpy().astype(bool)
    return TrainedHeads(
        weights=weights,
        bias=bias,
        n_iter=int(res.n_iter),
        converged=(gn < config.tol) | phi,
        final_grad_norm=gn,
        phi_stopped=phi,
        span=(span, reduced),
    )


def _lbfgs(
    prob: HeadObjective,
    x: np.ndarray,
    y: np.ndarray,
    config: HeadConfig,
    opts: LbfgsOptions,
    progress: Callable[[int, float], object] | None,
    curvature: bool = True,
) -> LbfgsResult:
    """L-BFGS for the K heads of ``prob`` (features ``x``), started from ONE head trained on the
    whole pool when the heads share a standardisation (docs/design/training.md, "Start").

    That head costs about 1/K of the batch and takes 20-30% of the iterations off every head (the
    optimum does not move: the objective is strictly convex); its preconditioner serves them all,
    with ``curvature`` refined by that head's exact Hessian on the pool's top directions
    (``Preconditioner.at``; not in the pool's span, where few examples per direction make one
    head's curvature a poor model of another's: benchmarks/README.md).
    """
    if config.standardize == "subset" or prob.k < 2:
        return minimize(prob, opts, progress)
    everyone = np.ones((1, len(y)), dtype=bool)
    pool_prob = HeadObjective(
        x, y, everyone, prob.c, config.l2, prob.dtype, prob.device, config.standardize
    )
    start = minimize(pool_prob, replace(opts, tol=opts.phi_guard, phi_tol=0.0))
    pre = pool_prob.preconditioner  # the same pool, scale and live features
    if curvature and pre is not None:
        pre = pre.at(pool_prob, start.theta[0])
    prob.preconditioner = pre
    theta0 = start.theta.expand(prob.k, -1).clone()
    theta0[prob.weight.sum(dim=1) == 0] = 0.0  # a head without data: its optimum, exactly
    return minimize(prob, opts, progress, theta0)


def _lbfgs_options(config: HeadConfig) -> LbfgsOptions:
    return LbfgsOptions(
        tol=config.tol,
        phi_tol=config.phi_tol,
        phi_guard=PHI_GRAD_GUARD * config.tol,
        max_iter=config.max_iter,
        history=config.history,
        precondition=config.precondition,
        mixed=config.dtype == "mixed",
    )


def train_head_single(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: HeadConfig = HeadConfig(),
    pool_features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ONE head on all of ``features`` with scipy: :func:`miascale.training.reference.train_head_single`."""
    from miascale.training.reference import train_head_single as reference

    return reference(features, labels, n_classes, config, pool_features)
