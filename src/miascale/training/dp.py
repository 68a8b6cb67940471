"""DP-SGD for K linear softmax heads at once (issue 8).

:func:`train_dp_heads` calibrates the noise multiplier to :class:`DPConfig` ``(epsilon, delta)``
with :mod:`miascale.privacy` and runs :func:`dp_sgd_heads`, the mechanism itself: Poisson
sampling, closed-form clipped per-example gradients (:func:`clipped_gradient_sums`), Gaussian
noise and heavy-ball SGD, per model with its own generator. Features are normalised per example
to unit norm (:func:`normalize_features`), which cannot be folded into the weights, so the result
is a :class:`DPTrainedHeads`, applied with :func:`dp_head_logits`.

Contract (mechanism, normalisation, randomness, defaults): docs/design/training.md ("DP-SGD heads").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from miascale import privacy
from miascale.errors import MiascaleError
from miascale.training.heads import (
    TrainedHeads,
    _check_features,
    _check_labels,
    _check_n_classes,
    check_in_mask,
    head_logits,
)

__all__ = ["DEFAULT_EXPECTED_BATCH", "DPConfig", "DPTrainedHeads", "clipped_gradient_sums",
           "dp_head_logits", "dp_sgd_heads", "normalize_features", "train_dp_heads"]  # fmt: skip

DEFAULT_EXPECTED_BATCH = 128
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _positive(value: object, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise MiascaleError(f"DPConfig.{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings (the mechanism and the defaults: docs/design/training.md).

    Attributes:
        epsilon: target ε (> 0, finite). A non-DP run does not use this trainer.
        delta: target δ in (0, 1); None -> ``privacy.default_delta(n)``.
        clip: per-example gradient norm bound R.
        sampling_rate: Poisson sampling probability q in (0, 1]; None ->
            ``min(1, expected_batch_size / n)``.
        expected_batch_size: used only when ``sampling_rate`` is None.
        steps: number of DP-SGD steps T.
        learning_rate: SGD step size (on unit-norm features).
        momentum: heavy-ball momentum in [0, 1).
        l2: weight decay on the weights (not the bias), >= 0.
        accountant: ``"pld"`` (default) or ``"rdp"``.
        seed: seeds the Poisson samples and the noise.
        dtype: ``"float64"`` (default) or ``"float32"`` for the computation.
    """

    epsilon: float
    delta: float | None = None
    clip: float = 1.0
    sampling_rate: float | None = None
    expected_batch_size: int = DEFAULT_EXPECTED_BATCH
    steps: int = 200
    learning_rate: float = 1.0
    momentum: float = 0.9
    l2: float = 0.0
    accountant: str = "pld"
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        privacy._check_epsilon(self.epsilon)
        if self.delta is not None:
            privacy._check_delta(self.delta)
        _positive(self.clip, "clip")
        if self.sampling_rate is not None:
            privacy._check_rate(self.sampling_rate)
        for name in ("expected_batch_size", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MiascaleError(f"DPConfig.{name} must be an integer >= 1, got {value!r}.")
        _positive(self.learning_rate, "learning_rate")
        _positive(self.l2, "l2", allow_zero=True)
        m = _positive(self.momentum, "momentum", allow_zero=True)
        if m >= 1.0:
            raise MiascaleError(f"DPConfig.momentum must lie in [0, 1), got {self.momentum!r}.")
        privacy._check_accountant(self.accountant)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MiascaleError(f"DPConfig.seed must be an integer, got {self.seed!r}.")
        if self.dtype not in _DTYPES:
            raise MiascaleError(
                f"DPConfig.dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}."
            )

    def resolve(self, n_train: int) -> tuple[float, float]:
        """``(sampling_rate, delta)`` for training sets of (at most) ``n_train`` examples."""
        if isinstance(n_train, bool) or not isinstance(n_train, int | np.integer) or n_train < 1:
            raise MiascaleError(f"n_train must be an integer >= 1, got {n_train!r}.")
        q = (
            float(self.sampling_rate)
            if self.sampling_rate is not None
            else min(1.0, self.expected_batch_size / int(n_train))
        )
        delta = float(self.delta) if self.delta is not None else privacy.default_delta(n_train)
        return q, delta


@dataclass(frozen=True)
class DPTrainedHeads:
    """K DP-SGD heads on L2-normalised features: ``logits = normalize(x) @ weights[k] + bias[k]``.

    Deliberately not a ``TrainedHeads`` (whose logits are ``x @ W + b``): use
    :func:`dp_head_logits` or :meth:`logits`.

    Attributes:
        weights: (K, D, C) float64, acting on ``normalize_features(x)``.
        bias: (K, C) float64.
        n_iter: DP-SGD steps run (= ``steps``).
        noise_multiplier: σ used (noise std σ·clip on each summed gradient).
        epsilon: the accountant's add/remove ε for (σ, q, T) at ``delta`` (<= ``target_epsilon``).
        target_epsilon: the ε asked for.
        delta: δ of the guarantee.
        sampling_rate: Poisson sampling probability q.
        clip: per-example clipping norm R.
        accountant: ``"pld"`` or ``"rdp"``.
        n_train: (K,) int64 training-set size of every model.
        relation, epsilon_game, delta_game: the membership game's neighbouring relation and the
            accountant's ε for it at δ ``delta_game`` (None: ``epsilon``, ``delta``).
    """

    weights: np.ndarray
    bias: np.ndarray
    n_iter: int
    noise_multiplier: float
    epsilon: float
    target_epsilon: float
    delta: float
    sampling_rate: float
    clip: float
    accountant: str
    n_train: np.ndarray
    relation: str = "add_remove"
    epsilon_game: float | None = None
    delta_game: float | None = None

    normalization = "l2-per-example"

    @property
    def n_models(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.weights.shape[2])

    @property
    def steps(self) -> int:
        return self.n_iter

    def logits(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(K, M, C) float64 logits of every head on every row of ``features`` (raw)."""
        return dp_head_logits(self, features, batch_size)

    def privacy_dict(self) -> dict[str, float | int | str]:
        """The guarantee and its parameters as plain values (for audit.json)."""
        return {
            "epsilon": float(self.epsilon),
            "target_epsilon": float(self.target_epsilon),
            "delta": float(self.delta),
            "noise_multiplier": float(self.noise_multiplier),
            "sampling_rate": float(self.sampling_rate),
            "steps": int(self.n_iter),
            "clip": float(self.clip),
            "accountant": self.accountant,
            "normalization": self.normalization,
            "n_train_min": int(self.n_train.min()),
            "n_train_max": int(self.n_train.max()),
            "relation": self.relation,
            "epsilon_game": float(self.epsilon if self.epsilon_game is None else self.epsilon_game),
            "delta_game": float(self.delta if self.delta_game is None else self.delta_game),
        }


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def normalize_features(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (zero rows stay zero); float64 (N, D)."""
    x = _check_features(features)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def clipped_gradient_sums(
    xb: torch.Tensor,
    yb: torch.Tensor,
    valid: torch.Tensor,
    theta: torch.Tensor,
    clip: float,
) -> torch.Tensor:
    """Sum of clipped per-example CE gradients for K models: (K, D1, C).

    Args:
        xb: (K, B, D1) batch features (bias column included).
        yb: (K, B, C) one-hot labels.
        valid: (K, B) 0/1 weights (0 for padding).
        theta: (K, D1, C) parameters.
        clip: clipping norm R.
    """
    z = torch.bmm(xb, theta)
    r = torch.softmax(z, dim=2) - yb  # (K, B, C): p - y
    norm = xb.norm(dim=2) * r.norm(dim=2)  # per-example gradient norm ||x~|| ||p - y||
    factor = torch.clamp(clip / norm.clamp(min=1e-300), max=1.0) * valid
    return torch.bmm(xb.transpose(1, 2), r * factor[:, :, None])


def _model_generators(seed: int, first_model: int, k: int) -> list[torch.Generator]:
    gens = []
    for j in range(k):
        state = np.random.SeedSequence([seed & (2**63 - 1), first_model + j]).generate_state(
            1, dtype=np.uint64
        )
        gens.append(torch.Generator(device="cpu").manual_seed(int(state[0]) & (2**63 - 1)))
    return gens


def _check_inputs(
    features: np.ndarray, labels: np.ndarray, in_mask: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n_classes = _check_n_classes(n_classes)
    x = _check_features(features)
    n = x.shape[0]
    y = _check_labels(labels, n, n_classes)
    mask = check_in_mask(in_mask, n)
    return x, y, mask, n_classes


def dp_sgd_heads(
    features: np.ndarray,
    labels: np.ndarray,
    in_mask: np.ndarray,
    n_classes: int,
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    clip: float = 1.0,
    learning_rate: float = 1.0,
    momentum: float = 0.9,
    l2: float = 0.0,
    seed: int = 0,
    first_model: int = 0,
    dtype: str = "float64",
    device: str | torch.device = "cpu",
    batch_masks: Callable[[int], np.ndarray] | None = None,
    progress: Callable[[int, float], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The DP-SGD mechanism with an explicit σ and no accounting (docs/design/training.md).

    ``features`` are raw; they are normalised here. ``noise_multiplier = 0`` is allowed (no
    privacy; for tests). ``batch_masks(step)``, if given, returns the (K, N) bool batch of every
    model at that step (it is intersected with ``in_mask``) instead of Poisson sampling; the
    noise still comes from the model generators. ``progress(step, max_noisy_grad_norm)``
    is called after every step.

    Returns:
        weights (K, D, C) and bias (K, C), float64, acting on ``normalize_features(x)``.
    """
    x, y, mask, c = _check_inputs(features, labels, in_mask, n_classes)
    sigma = float(noise_multiplier)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise MiascaleError(f"noise_multiplier must be a finite number >= 0, got {sigma!r}.")
    q = privacy._check_rate(sampling_rate)
    steps = privacy._check_steps(steps)
    for name, value, zero_ok in (
        ("clip", clip, False),
        ("learning_rate", learning_rate, False),
        ("l2", l2, True),
        ("momentum", momentum, True),
    ):
        if not (math.isfinite(float(value)) and (value > 0 or (zero_ok and value == 0))):
            raise MiascaleError(f"{name} must be a finite number > 0, got {value!r}.")
    if momentum >= 1:
        raise MiascaleError(f"momentum must lie in [0, 1), got {momentum!r}.")
    if dtype not in _DTYPES:
        raise MiascaleError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}.")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MiascaleError(f"unknown torch device {device!r}: {exc}") from exc
    tdt = _DTYPES[dtype]
    k, n = mask.shape
    d = x.shape[1]
    xt_np = np.concatenate([normalize_features(x), np.ones((n, 1))], axis=1)
    gens = _model_generators(int(seed), int(first_model), k)
    with torch.no_grad():
        xt = torch.as_tensor(xt_np, dtype=tdt, device=dev)  # (N, D1)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(y, device=dev), c).to(tdt)
        mask_cpu = torch.as_tensor(mask)
        counts = mask_cpu.sum(dim=1).to(torch.float64)
        scale = (1.0 / (q * counts).clamp(min=1.0)).to(dev, tdt)[:, None, None]  # 1/(q n_k)
        theta = torch.zeros(k, d + 1, c, dtype=tdt, device=dev)
        vel = torch.zeros_like(theta)
        decay = torch.ones(d + 1, 1, dtype=tdt, device=dev) * l2
        decay[d] = 0.0
        arange_n = torch.arange(max(n, 1))
        for step in range(steps):
            if batch_masks is None:
                u = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in gens])
                batch = mask_cpu & (u < q)
            else:
                bm = np.asarray(batch_masks(step))
                if bm.shape != (k, n):
                    raise MiascaleError(f"batch_masks({step}) must have shape {(k, n)}.")
                batch = mask_cpu & torch.as_tensor(bm.astype(bool))
            sizes = batch.sum(dim=1)
            width = max(int(sizes.max()), 1)
            # Row k of idx: the batch of model k in increasing index order, then padding (0).
            members = torch.nonzero(batch)  # (M, 2), sorted by model then example
            offsets = torch.cumsum(sizes, 0) - sizes
            slot = torch.arange(members.shape[0]) - offsets[members[:, 0]]
            idx = torch.zeros(k, width, dtype=torch.long)
            idx[members[:, 0], slot] = members[:, 1]
            valid = (arange_n[:width][None, :] < sizes[:, None]).to(dev, tdt)
            idx = idx.to(dev)
            grad = clipped_gradient_sums(xt[idx], onehot[idx], valid, theta, float(clip))
            if sigma > 0:
                noise = torch.stack([torch.randn(d + 1, c, generator=g, dtype=tdt) for g in gens])
                grad = grad + (sigma * float(clip)) * noise.to(dev)
            grad = grad * scale
            if l2 > 0:
                grad = grad + decay * theta
            vel = momentum * vel + grad if momentum > 0 else grad
            theta = theta - learning_rate * vel
            if progress is not None:
                progress(step + 1, float(grad.flatten(1).norm(dim=1).max()))
        theta64 = theta.to(torch.float64).cpu().numpy()
    return np.ascontiguousarray(theta64[:, :d, :]), np.ascontiguousarray(theta64[:, d, :])


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def train_dp_heads(
    features: np.ndarray,
    labels: np.ndarray,
    in_mask: np.ndarray,
    n_classes: int,
    config: DPConfig,
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], object] | None = None,
    relation: str = "add_remove",
) -> DPTrainedHeads:
    """Train K DP-SGD heads at once, each (ε, δ)-DP w.r.t. its own training set.

    Args: as :func:`miascale.training.heads.train_heads`, with a :class:`DPConfig`.
        ``progress(step, max_noisy_grad_norm)`` after every step. ``relation``: of the game
        (``privacy.game_relation(design)``); σ is calibrated for add/remove ε regardless.

    Returns:
        :class:`DPTrainedHeads` (use :func:`dp_head_logits` for logits) with σ, the accountant's
        ε and δ.
    """
    if not isinstance(config, DPConfig):
        raise MiascaleError(f"config must be a DPConfig, got {type(config).__name__}.")
    rel = privacy._check_relation(relation)
    x, y, mask, c = _check_inputs(features, labels, in_mask, n_classes)
    n_train = mask.sum(axis=1).astype(np.int64)
    n_max = int(n_train.max())
    if n_max == 0:
        raise MiascaleError("every model has an empty training set (in_mask is all False).")
    q, delta = config.resolve(n_max)
    sigma = privacy.calibrate_noise(config.epsilon, delta, q, config.steps, config.accountant)
    eps = privacy.epsilon_for(sigma, q, config.steps, delta, config.accountant)
    eps_game = eps if rel == "add_remove" else privacy.epsilon_for(
        sigma, q, config.steps, delta, config.accountant, rel)  # fmt: skip
    weights, bias = dp_sgd_heads(
        x, y, mask, c, noise_multiplier=sigma, sampling_rate=q, steps=config.steps,
        clip=config.clip, learning_rate=config.learning_rate, momentum=config.momentum,
        l2=config.l2, seed=config.seed, dtype=config.dtype, device=device, progress=progress,
    )  # fmt: skip
    return DPTrainedHeads(
        weights=weights,
        bias=bias,
        n_iter=config.steps,
        noise_multiplier=sigma,
        epsilon=eps,
        target_epsilon=float(config.epsilon),
        delta=delta,
        sampling_rate=q,
        clip=float(config.clip),
        accountant=config.accountant,
        n_train=n_train,
        relation=rel,
        epsilon_game=eps_game,
        delta_game=delta,  # privacy.epsilon_for gives ε at exactly this δ on every path
    )


def dp_head_logits(
    heads: DPTrainedHeads | TrainedHeads, features: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """Logits (K, M, C) float64 of DP heads (normalising ``features`` first) or plain heads."""
    if isinstance(heads, TrainedHeads):
        return head_logits(heads, features, batch_size)
    if not isinstance(heads, DPTrainedHeads):
        raise MiascaleError(
            f"heads must be DPTrainedHeads or TrainedHeads, got {type(heads).__name__}."
        )
    x = normalize_features(features)
    k, d, _ = heads.weights.shape
    if x.shape[1] != d:
        raise MiascaleError(f"features have {x.shape[1]} dims but the heads expect {d}.")
    plain = TrainedHeads(
        weights=heads.weights,
        bias=heads.bias,
        n_iter=heads.n_iter,
        converged=np.zeros(k, dtype=bool),
        final_grad_norm=np.full(k, np.nan),
        phi_stopped=np.zeros(k, dtype=bool),
    )
    return head_logits(plain, x, batch_size)
