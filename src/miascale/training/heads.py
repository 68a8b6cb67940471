"""K multinomial logistic-regression heads on frozen features, trained as one batched computation.

A membership-inference audit trains K models ("heads") on different subsets of one pool of N
examples with D-dimensional frozen features. :func:`train_heads` trains all K at once with a few
large matrix multiplications per iteration; there is no Python loop over models.

Objective of head k (the contract)
----------------------------------
Let ``T_k = {i : in_mask[k, i]}`` be model k's training subset and ``n_k = |T_k|``.

1. Standardisation (``HeadConfig.standardize``) sets the feature scale ``x~ = (x - mu_k) / sd_k``:

   * ``"pool"`` (default): ``mu_k = mu`` and ``sd_k = sd``, the mean and population std (ddof=0)
     of the WHOLE pool, shared by every model of an audit. A model's tiny subset never sets its
     feature scale (DESIGN §3; see docs/audit.md "Head recipe" for the measured reason).
   * ``"subset"``: model k's OWN subset, ``mu_k = mean_{i in T_k} x_i``,
     ``sd_k = std_{i in T_k} x_i`` (the recipe before 0.4; an empty subset uses ``mu=0, sd=1``).
     At small S a feature nearly constant on the subset gets a tiny ``sd_k`` and a non-member
     that differs on it an enormous logit.
   * ``"none"``: raw features (``mu = 0``, ``sd = 1``), a plain linear probe.

   Standard deviations are floored at ``STD_FLOOR = 1e-6`` (in the units of the features, so a
   constant feature contributes nothing).
2. Parameters ``V_k`` (D, C) and ``c_k`` (C,) start at zero and minimise the strictly convex

       f_k(V, c) = (1/n_k) * sum_{i in T_k} CE(V^T x~_i + c, y_i) + (l2/2) * ||V||_F^2

   (softmax cross-entropy, natural log; the bias is not regularised). The objective does not
   change when the same constant is added to all C biases; we return the representative with
   ``sum(c_k) = 0`` (gradient methods started at zero stay on it). With that, for ``l2 > 0`` the
   optimum is unique, so the batched result equals training each head alone
   (:func:`train_head_single`), and it gives the same predictions as scikit-learn's
   ``LogisticRegression(C=1/(l2*n_k))`` on the subset standardised as above.
3. The standardisation is folded into the returned parameters, in the ORIGINAL feature space:
   ``W_k = V_k / sd_k[:, None]`` and ``b_k = c_k - mu_k @ W_k``, so that the logits of any
   example x are simply ``x @ W_k + b_k`` (:func:`head_logits`).

Convergence is declared for a head when the max-abs component of its gradient (with respect to
``(V_k, c_k)``, i.e. in standardised space) is below ``tol`` -- the same criterion as
scikit-learn's lbfgs ``tol`` (scipy's ``pgtol``) on the same (averaged) objective.

Optimisers
----------
``"lbfgs"`` (default): full-batch L-BFGS run independently per head but vectorised over heads:
each head has its own curvature memory (vectorised two-loop recursion), its own backtracking
Armijo line search and its own step size; one function/gradient evaluation for all heads costs two
GEMMs, ``Xc @ U`` with ``U`` of shape (D, K*C) and ``Xc^T @ R`` with the masked residuals
``R`` of shape (N, K*C), where per-model masks enter as per-example weights. Heads stop moving
once converged.

Preconditioning (``HeadConfig.precondition``, default on). Standardised backbone features are
strongly correlated (top eigenvalue of ``X~^T X~ / n`` around 100 against ``l2 = 1e-3``), which
makes plain L-BFGS slow. Böhning's bound says the Hessian of the averaged softmax CE w.r.t.
``(V, c)`` is at most ``B = A (x) Sigma (+) A`` with ``A = (I_C - 11^T/C)/2`` and
``Sigma = X~^T X~ / n`` (the cross term vanishes because X~ is centred). The L-BFGS initial
inverse Hessian of head k is the inverse of ``P_k = gamma_k * B + l2 * I_V``:

* ``Sigma`` is ONE matrix for all heads: the covariance of the whole pool standardised with pool
  statistics (a model's subset is about half the pool). It is eigendecomposed once in float64
  (from the (N, N) Gram matrix when N <= D); eigenvalues of at least 1% of its trace, and of
  at least the share of 16 average examples (``16 trace/N``), are kept exactly (at most 100 of
  them: the shared, well-estimated directions; none for tiny pools) and the remaining
  spectrum is flattened to the largest dropped eigenvalue (Nyström-style). Keeping the small,
  sample-specific eigenvalues of the pool would mislead the heads, whose subsets lack half of
  those directions. Applying ``P_k^{-1}`` to all heads is two thin GEMMs, ``Q^T G`` and
  ``Q H`` over (D, r) x (r, K*C), plus elementwise scaling by ``1/(gamma_k lam_j/2 + l2)``.
  In the ``V 1`` direction only the regulariser acts, so there ``P`` is exactly ``l2``; the
  bias block uses the pseudo-inverse ``A^+/gamma_k``.
* ``gamma_k`` in (0, 1] is the curvature of the data term relative to the bound, refitted after
  every step from the newest pair: with ``y_d = y - l2 s_V ~ gamma B s``,
  ``gamma = y_d^T B^+ y_d / s^T y_d`` (a Barzilai-Borwein-2 estimate in the bound's metric).
  It starts at 1, where ``-P^{-1} g`` with unit step is a majorisation (guaranteed-descent)
  step. Near a sharp optimum the data curvature falls far below the bound, and without this
  rescaling the fixed bound is a poor preconditioner.

* A feature that is constant on head k's subset (``sd_k`` floored) has ``x~ = 0`` there, so its
  weights feel only the regulariser and stay exactly 0 from the zero start; the shared
  ``Sigma`` does not know that, so those coordinates are masked out of ``P_k^{-1}`` (otherwise
  they pick up weights of order ``tol/l2`` that the folding ``W = V/sd_k`` multiplies by
  ``1/STD_FLOOR``). Sparse (ReLU) backbone features are often constant on small subsets.

Heads still unconverged after ``PRECONDITIONED_ITERATIONS`` (100) preconditioned iterations
continue with plain L-BFGS from where they are (on MiniLM text features the bound is a poor
curvature model and the preconditioned phase can crawl; plain L-BFGS then finishes in a few
iterations).

The preconditioner only changes the path, never the objective or its optimum. On fashion-mnist
x EfficientNet-lite0 features (D=1280, C=10, K=65, N=2CS) the iterations to ``tol=1e-6`` drop
from 29/51/112/252/365 to 18/24/39/68/98 for S = 1/4/16/64/128; one preconditioner application
costs two thin GEMMs of rank <= 100 (typically 0-20), small next to the objective's two.

``"adam"``: minibatch Adam (paper-style option), batched over heads: every head draws its own
minibatches (a seeded permutation of its own subset each epoch) and takes its own Adam steps on
the same objective (minibatch mean CE + l2 term). It does not reach the exact optimum;
``converged`` reports whether the full-batch gradient ended below ``tol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from miascale.errors import MiascaleError

__all__ = [
    "STD_FLOOR",
    "HeadConfig",
    "TrainedHeads",
    "head_logits",
    "train_head_single",
    "train_heads",
]

STD_FLOOR = 1e-6
"""Per-feature standard deviations below this are replaced by it (original feature units)."""

_PRECOND_CUT = 0.01
"""Eigenvalues of the pool covariance kept exactly in the preconditioner: >= this x its trace."""
_PRECOND_EXAMPLES = 16
"""... and >= the share of this many average examples (trace/N each): shared directions only."""

PRECONDITIONED_ITERATIONS = 100
"""L-BFGS iterations with the preconditioner before unconverged heads fall back to plain L-BFGS."""

_OPTIMIZERS = ("lbfgs", "adam")
STANDARDIZE = ("pool", "subset", "none")
"""Feature standardisation recipes of a head (see the module docstring); the first is the default."""
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class HeadConfig:
    """Settings of the head objective and its optimiser.

    Attributes:
        l2: L2 strength on the weights (not the bias) of the objective above, on standardised
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
        dtype: precision of the two big matrix multiplications. ``"float64"`` (default) is exact
            enough to reach ``tol=1e-6`` tightly; ``"float32"`` is about twice as fast per
            iteration but the gradient is then only accurate to about 1e-6 relative, so tight
            tolerances may not be reached. Optimiser state and everything else is float64.
        precondition: L-BFGS only: use the scaled Böhning-bound preconditioner described in
            the module docstring (default). ``False`` gives plain L-BFGS with ``H0 = gamma*I``;
            both reach the same optimum.
        standardize: ``"pool"`` (default), ``"subset"`` or ``"none"``: whose statistics set the
            feature scale (module docstring, item 1).
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
    dtype: str = "float64"
    precondition: bool = True
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
        converged: (K,) bool, final max-abs gradient below ``tol``.
        final_grad_norm: (K,) float64 max-abs gradient component at the returned parameters
            (standardised space).
    """

    weights: np.ndarray
    bias: np.ndarray
    n_iter: int
    converged: np.ndarray
    final_grad_norm: np.ndarray

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
# Batched objective
# --------------------------------------------------------------------------------------------


class _Problem:
    """All K objectives; parameters theta (K, P) with P = D*C + C, V = theta[:, :D*C]."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        mask: np.ndarray,
        n_classes: int,
        l2: float,
        dtype: torch.dtype,
        device: torch.device,
        standardize: str = "pool",
    ) -> None:
        n, d = x.shape
        k = mask.shape[0]
        f64 = torch.float64
        self.n, self.d, self.k, self.c = n, d, k, n_classes
        self.l2 = float(l2)
        self.device = device
        self.dtype = dtype
        # Global centering (exact reparametrisation, improves float32 matmuls).
        self.center = x.mean(axis=0)
        xc64 = torch.as_tensor(x - self.center, dtype=f64, device=device)
        m = torch.as_tensor(mask, dtype=f64, device=device)
        counts = m.sum(dim=1)
        self.counts = counts
        inv_n = 1.0 / counts.clamp(min=1.0)
        self.standardized = standardize != "none"
        if standardize == "subset":
            # Masked per-model statistics (two (K,N)@(N,D) matmuls, float64).
            mu = (m @ xc64) * inv_n[:, None]
            var = ((m @ (xc64 * xc64)) * inv_n[:, None] - mu * mu).clamp(min=0.0)
            sd = var.sqrt().clamp(min=STD_FLOOR)
            empty = counts == 0
            if bool(empty.any()):
                mu[empty] = 0.0 - torch.as_tensor(self.center, dtype=f64, device=device)
                sd[empty] = 1.0
        elif standardize == "pool":
            pool_mu = xc64.mean(dim=0)
            pool_sd = ((xc64 * xc64).mean(dim=0) - pool_mu * pool_mu).clamp(min=0.0).sqrt()
            mu = pool_mu.expand(k, d).clone()
            sd = pool_sd.clamp(min=STD_FLOOR).expand(k, d).clone()
        else:  # raw features; the centring only moves the (unregularised) bias
            mu = torch.zeros(k, d, dtype=f64, device=device)
            sd = torch.ones(k, d, dtype=f64, device=device)
        self.mu_c = mu  # standardisation mean, in globally centred coordinates
        self.sd = sd
        self.inv_sd = 1.0 / sd
        self.inv_sd_t = self.inv_sd.t().contiguous()  # (D, K)
        self.mu_c_t = mu.t().contiguous()  # (D, K)
        self.xc64 = xc64
        self.xc = xc64.to(dtype)
        self.xc_t = self.xc.t().contiguous()
        self.weight = m * inv_n[:, None]  # (K, N) per-example weights 1/n_k on T_k
        self.weight_t = self.weight.t().contiguous()  # (N, K)
        self.y = torch.as_tensor(y, device=device)
        self.onehot = torch.nn.functional.one_hot(self.y, n_classes).to(f64)  # (N, C)
        self.y_idx = self.y.view(n, 1, 1).expand(n, k, 1)
        self.n_params = d * n_classes + n_classes
        self.n_evals = 0
        self.preconditioner: _Preconditioner | None = None

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dc = self.d * self.c
        return theta[:, :dc].reshape(self.k, self.d, self.c), theta[:, dc:]

    def folded(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-space-offset form: logits = xc @ U + off (xc globally centred)."""
        v, c = self.split(theta)
        u = v / self.sd[:, :, None]
        off = c - torch.einsum("kd,kdc->kc", self.mu_c, u)
        return u, off

    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective (K,) and gradient (K, P), float64; two GEMMs of size N x D x K*C."""
        self.n_evals += 1
        k, d, c, n = self.k, self.d, self.c, self.n
        f64 = torch.float64
        v, bias = self.split(theta)
        # U in (D, K, C) layout so that it is directly the (D, K*C) GEMM operand.
        u = torch.mul(v.permute(1, 0, 2), self.inv_sd_t[:, :, None])
        u = u.contiguous()
        off = bias - torch.einsum("dk,dkc->kc", self.mu_c_t, u)
        z = self.xc @ u.view(d, k * c).to(self.dtype)
        z = z.to(f64).view(n, k, c)
        z.add_(off[None])
        zmax = z.amax(dim=2, keepdim=True)
        z.sub_(zmax)
        z_true = z.gather(2, self.y_idx).squeeze(2)  # (N, K), shifted logit of the true class
        e = z.exp_()
        se = e.sum(dim=2, keepdim=True)
        ce = se.log().squeeze(2).sub_(z_true)  # (N, K) cross-entropy
        f = (ce * self.weight_t).sum(dim=0)
        # Residuals (softmax - onehot) weighted by 1/n_k on each model's subset.
        r = e.div_(se).sub_(self.onehot[:, None, :]).mul_(self.weight_t[:, :, None])
        g_c = r.sum(dim=0)  # (K, C)
        g_raw = (self.xc_t @ r.view(n, k * c).to(self.dtype)).to(f64).view(d, k, c)
        g = torch.empty(k, self.n_params, dtype=f64, device=self.device)
        g_v = g[:, : d * c].view(k, d, c)
        g_v.copy_(g_raw.permute(1, 0, 2))
        g_v.addcmul_(self.mu_c[:, :, None], g_c[:, None, :], value=-1.0)
        g_v.mul_(self.inv_sd[:, :, None])
        if self.l2:
            g_v.add_(v, alpha=self.l2)
            f = f + 0.5 * self.l2 * (theta[:, : d * c] * theta[:, : d * c]).sum(dim=1)
        g[:, d * c :] = g_c
        return f, g

    def to_original(self, theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        u, off = self.folded(theta)
        center = torch.as_tensor(self.center, dtype=torch.float64, device=self.device)
        bias = off - torch.einsum("d,kdc->kc", center, u)
        return u.cpu().numpy().copy(), bias.cpu().numpy().copy()


def _gnorm(g: torch.Tensor) -> torch.Tensor:
    return g.abs().amax(dim=1)


# --------------------------------------------------------------------------------------------
# Batched per-head L-BFGS
# --------------------------------------------------------------------------------------------


class _Preconditioner:
    """Inverse of a scaled Böhning bound, shared by all heads (see the module docstring).

    ``B = A (x) Sigma (+) A`` bounds the Hessian of the data term for (V, c), with
    ``A = (I - 11^T/C)/2`` and ``Sigma`` the covariance of the WHOLE pool standardised with pool
    statistics. ``Sigma`` is kept as its top eigenpairs ``Q, lam`` (eigenvalues at least
    ``_PRECOND_CUT`` of its trace, so at most ``1/_PRECOND_CUT`` of them) plus one flat value
    ``lam_tail`` (the largest eigenvalue dropped) for the rest. Head k's preconditioner is
    ``P_k = gamma_k * B + l2 * I_V``; applying its inverse to all heads is two GEMMs over
    (D, r) x (r, K*C) with r the kept rank, plus elementwise work.
    """

    def __init__(self, prob: _Problem, l2: float) -> None:
        n, d = prob.n, prob.d
        xc = prob.xc64  # globally centred
        if prob.standardized:  # the heads' parameters live on (approximately) the pool's scale
            xs = xc / (xc * xc).mean(dim=0).sqrt().clamp(min=STD_FLOOR)
        else:
            xs = xc
        if n <= d:  # eigenpairs of Sigma from the (N, N) Gram matrix
            lam, u = torch.linalg.eigh(xs @ xs.t() / n)
        else:
            lam, u = torch.linalg.eigh(xs.t() @ xs / n)
        lam = lam.clamp(min=0.0)
        keep = lam >= max(_PRECOND_CUT, _PRECOND_EXAMPLES / n) * float(lam.sum())
        keep &= lam > 0
        self.lam_tail = float(lam[~keep].max()) if bool((~keep).any()) else 0.0
        lam, u = lam[keep], u[:, keep]
        q = (xs.t() @ u) / (lam * n).sqrt() if n <= d else u
        # l2 = 0: the bound alone is singular; regularise the preconditioner only.
        self.l2 = l2 if l2 > 0 else 1e-6 * max(float(lam.sum()), 1.0) / d
        self.rank = int(lam.shape[0])
        self.lam = lam
        self.q = q.contiguous()
        self.q_t = q.t().contiguous()
        # A feature constant on head k's subset (sd_k floored) has x~ = 0 there: its weights feel
        # only the regulariser and stay exactly 0 from the zero start. The shared Sigma knows
        # nothing of that, so such coordinates are masked out of P_k^{-1} (else they pick up
        # weights ~ tol/l2 that the folding W = V/sd_k blows up by 1/STD_FLOOR).
        self.live = (prob.sd > STD_FLOOR).to(prob.sd.dtype).t().contiguous()  # (D, K)
        self.d, self.c, self.k = d, prob.c, prob.k
        self.n_apply = 0  # GEMM-pair counters (for benchmarks)
        self.n_curv = 0

    def apply(self, g: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """``P_k^{-1} g`` for every head, g (K, P) -> (K, P), gamma (K,)."""
        self.n_apply += 1
        k, d, c = self.k, self.d, self.c
        out = torch.empty_like(g)
        u = g[:, : d * c].view(k, d, c).permute(1, 0, 2).contiguous()  # (D, K, C)
        gmean = u.mean(dim=2, keepdim=True)
        u.sub_(gmean).mul_(self.live[:, :, None])
        tail = 1.0 / (0.5 * self.lam_tail * gamma + self.l2)  # (K,)
        h = (self.q_t @ u.view(d, k * c)).view(-1, k, c)
        scale = 1.0 / (0.5 * self.lam[:, None] * gamma[None, :] + self.l2) - tail[None, :]
        h.mul_(scale[:, :, None])
        pv = torch.addmm(u.mul_(tail[None, :, None]).view(d, k * c), self.q, h.view(-1, k * c))
        pv = pv.view(d, k, c).add_(gmean, alpha=1.0 / self.l2).mul_(self.live[:, :, None])
        out[:, : d * c].view(k, d, c).copy_(pv.permute(1, 0, 2))
        gc = g[:, d * c :]
        out[:, d * c :] = (2.0 / gamma[:, None]) * (gc - gc.mean(dim=1, keepdim=True))
        return out

    def inverse_bound_curvature(self, y: torch.Tensor) -> torch.Tensor:
        """``y^T B_k^+ y`` per head (B_k: head k's bound as approximated in :meth:`apply`)."""
        self.n_curv += 1
        k, d, c = self.k, self.d, self.c
        u = y[:, : d * c].view(k, d, c).permute(1, 0, 2).contiguous()
        u.sub_(u.mean(dim=2, keepdim=True)).mul_(self.live[:, :, None])
        inv_tail = 1.0 / self.lam_tail if self.lam_tail > 0 else 0.0  # pseudo-inverse
        tot = 2.0 * inv_tail * (u * u).sum(dim=(0, 2))
        h = (self.q_t @ u.view(d, k * c)).view(-1, k, c)
        tot += 2.0 * ((h * h).sum(dim=2) * (1.0 / self.lam - inv_tail)[:, None]).sum(dim=0)
        yc = y[:, d * c :]
        yc = yc - yc.mean(dim=1, keepdim=True)
        return tot + 2.0 * (yc * yc).sum(dim=1)


def _lbfgs(
    prob: _Problem,
    config: HeadConfig,
    progress: Callable[[int, float], object] | None,
    theta0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, torch.Tensor]:
    k, p = prob.k, prob.n_params
    f64 = torch.float64
    dev = prob.device
    m = config.history
    pre = _Preconditioner(prob, prob.l2) if config.precondition else None
    prob.preconditioner = pre
    theta = torch.zeros(k, p, dtype=f64, device=dev) if theta0 is None else theta0.clone()
    f, g = prob.value_and_grad(theta)
    gn = _gnorm(g)
    s_hist = torch.zeros(m, k, p, dtype=f64, device=dev)
    y_hist = torch.zeros(m, k, p, dtype=f64, device=dev)
    rho = torch.zeros(m, k, dtype=f64, device=dev)  # 0 marks an unused slot for that head
    gamma = torch.ones(k, dtype=f64, device=dev)
    has_hist = torch.zeros(k, dtype=torch.bool, device=dev)
    stalls = torch.zeros(k, dtype=torch.int64, device=dev)
    pos = 0
    n_iter = 0
    c1 = 1e-4
    for it in range(1, config.max_iter + 1):
        active = (gn >= config.tol) & (stalls < 3)
        if not bool(active.any()):
            break
        n_iter = it
        # Two-loop recursion, vectorised over heads (newest pair first).
        q = g.clone()
        alphas = []
        for j in range(m):
            slot = (pos - 1 - j) % m
            a = rho[slot] * (s_hist[slot] * q).sum(dim=1)
            q.addcmul_(a[:, None], y_hist[slot], value=-1.0)
            alphas.append((slot, a))
        if pre is not None:
            q = pre.apply(q, gamma)
        else:
            q.mul_(gamma[:, None])
        for slot, a in reversed(alphas):
            b = rho[slot] * (y_hist[slot] * q).sum(dim=1)
            q.addcmul_((a - b)[:, None], s_hist[slot])
        direction = -q
        gd = (g * direction).sum(dim=1)
        bad = ~(gd < 0) | ~has_hist
        if bool(bad.any()):
            # Heads without (usable) curvature memory: preconditioned steepest descent with a
            # unit step and gamma = 1 (a majorisation step under the bound), or a gradient step
            # scaled to unit length on the first iteration.
            reset = bad & has_hist
            if bool(reset.any()):
                rho[:, reset] = 0.0
                gamma[reset] = 1.0
            if pre is not None:
                # Heads without history already got -P^{-1} g from the recursion above.
                sd_dir = -pre.apply(g, gamma) if bool(reset.any()) else direction
            else:
                gnorm2 = g.norm(dim=1).clamp(min=1e-300)
                sd_dir = -g / torch.where(has_hist, torch.ones_like(gnorm2), gnorm2)[:, None]
            direction = torch.where(bad[:, None], sd_dir, direction)
            gd = (g * direction).sum(dim=1)
        # Per-head backtracking Armijo line search, all heads evaluated together.
        step = torch.where(active, torch.ones_like(f), torch.zeros_like(f))
        pending = active.clone()
        new_theta, new_f, new_g = theta, f, g
        for trial_no in range(40):
            trial = torch.addcmul(theta, step[:, None], direction)
            ft, gt = prob.value_and_grad(trial)
            ok = pending & torch.isfinite(ft) & (ft <= f + c1 * step * gd)
            if trial_no == 0 and bool((ok == active).all()):
                # Common case: every active head accepts the full step (inactive heads have
                # step 0, so the trial equals their current point).
                new_theta, new_f, new_g = trial, ft, gt
                pending = pending & ~ok
                break
            if trial_no == 0:
                new_theta, new_f, new_g = theta.clone(), f.clone(), g.clone()
            if bool(ok.any()):
                new_theta[ok], new_f[ok], new_g[ok] = trial[ok], ft[ok], gt[ok]
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            # Safeguarded quadratic interpolation, within [0.1, 0.5] of the current step.
            denom = 2.0 * (ft - f - gd * step)
            interp = torch.where(
                torch.isfinite(denom) & (denom > 0), -gd * step * step / denom, 0.5 * step
            )
            shrunk = torch.minimum(torch.maximum(interp, 0.1 * step), 0.5 * step)
            step = torch.where(pending, shrunk, step)
        failed = pending
        # No strict decrease (line search failed, or accepted at the float64 rounding floor).
        no_progress = active & (failed | ~(new_f < f))
        stalls = torch.where(no_progress, stalls + 1, torch.zeros_like(stalls))
        if bool(failed.any()):
            rho[:, failed] = 0.0
            gamma[failed] = 1.0
            has_hist = has_hist & ~failed
        moved = active & ~failed
        s = new_theta - theta
        yv = new_g - g
        sy = (s * yv).sum(dim=1)
        yy = (yv * yv).sum(dim=1)
        good = moved & (sy > 1e-12 * yy.sqrt() * s.norm(dim=1)) & (yy > 0)
        # Slots with rho = 0 are ignored by the two-loop recursion, so store pairs as they are.
        s_hist[pos] = s
        y_hist[pos] = yv
        rho[pos] = torch.where(good, 1.0 / sy.clamp(min=1e-300), torch.zeros_like(sy))
        if pre is not None:
            # Curvature of the data term relative to the bound, fitted to the newest pair:
            # with y_data = y - l2*s_V ~ gamma * B s, the (Barzilai-Borwein-2 type) estimate
            # gamma = y_data^T B^+ y_data / s^T y_data. The bound gives gamma <= 1.
            dc = prob.d * prob.c
            y_data = yv.clone()
            y_data[:, :dc].add_(s[:, :dc], alpha=-prob.l2)
            data_sy = (s * y_data).sum(dim=1)
            ratio = pre.inverse_bound_curvature(y_data) / data_sy.clamp(min=1e-300)
            upd = good & (data_sy > 0) & torch.isfinite(ratio) & (ratio > 0)
            gamma = torch.where(upd, ratio.clamp(min=1e-8, max=2.0), gamma)
        else:
            gamma = torch.where(good, sy / yy.clamp(min=1e-300), gamma)
        has_hist = has_hist | good
        pos = (pos + 1) % m
        theta, f, g = new_theta, new_f, new_g
        gn = _gnorm(g)
        if progress is not None:
            progress(it, float(gn.max()))
    return theta, n_iter, gn


# --------------------------------------------------------------------------------------------
# Batched minibatch Adam
# --------------------------------------------------------------------------------------------


def _adam(
    prob: _Problem,
    mask: np.ndarray,
    config: HeadConfig,
    progress: Callable[[int, float], object] | None,
) -> tuple[torch.Tensor, int, torch.Tensor]:
    k, d, c, n = prob.k, prob.d, prob.c, prob.n
    f64 = torch.float64
    dev = prob.device
    bsz = config.batch_size
    lr = config.learning_rate
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    mask_t = torch.as_tensor(mask, device="cpu")
    counts = mask_t.sum(dim=1)
    n_max = int(counts.max())
    theta = torch.zeros(k, d * c + c, dtype=f64, device=dev)
    m1 = torch.zeros_like(theta)
    m2 = torch.zeros_like(theta)
    t_head = torch.zeros(k, dtype=f64, device=dev)  # Adam step count per head
    xc = prob.xc
    steps = 0
    gn = _gnorm(prob.value_and_grad(theta)[1])
    for epoch in range(1, config.epochs + 1):
        if n_max == 0:
            break
        keys = torch.rand(k, n, generator=gen, dtype=f64)
        keys[~mask_t] = 2.0  # non-members sort last
        order = torch.argsort(keys, dim=1, stable=True)[:, :n_max]
        valid_all = torch.arange(n_max)[None, :] < counts[:, None]
        order, valid_all = order.to(dev), valid_all.to(dev)
        for start in range(0, n_max, bsz):
            idx = order[:, start : start + bsz]  # (K, B)
            valid = valid_all[:, start : start + bsz].to(f64)
            nb = valid.sum(dim=1)
            live = nb > 0
            w = valid / nb.clamp(min=1.0)[:, None]
            v, _ = prob.split(theta)
            u, off = prob.folded(theta)
            xb = xc[idx]  # (K, B, D)
            z = torch.bmm(xb, u.to(prob.dtype)).to(f64) + off[:, None, :]
            pr = torch.softmax(z, dim=2)
            r = (pr - prob.onehot[idx]) * w[:, :, None]  # (K, B, C)
            g_c = r.sum(dim=1)
            g_raw = torch.bmm(xb.transpose(1, 2), r.to(prob.dtype)).to(f64)
            g_v = (g_raw - prob.mu_c[:, :, None] * g_c[:, None, :]) / prob.sd[:, :, None]
            g_v = g_v + prob.l2 * v
            grad = torch.cat([g_v.reshape(k, d * c), g_c], dim=1)
            grad = grad * live[:, None]
            t_head = t_head + live.to(f64)
            m1 = torch.where(live[:, None], beta1 * m1 + (1 - beta1) * grad, m1)
            m2 = torch.where(live[:, None], beta2 * m2 + (1 - beta2) * grad * grad, m2)
            t = t_head.clamp(min=1.0)[:, None]
            mhat = m1 / (1 - beta1**t)
            vhat = m2 / (1 - beta2**t)
            theta = theta - (lr * live[:, None]) * mhat / (vhat.sqrt() + eps)
            steps += 1
        if progress is not None or epoch == config.epochs:
            gn = _gnorm(prob.value_and_grad(theta)[1])
            if progress is not None:
                progress(epoch, float(gn.max()))
    gn = _gnorm(prob.value_and_grad(theta)[1])
    return theta, steps, gn


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
    """Train K heads at once; head k trains on ``features[in_mask[k]]`` (see module docstring).

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
        prob = _Problem(
            x, y, mask, n_classes, config.l2, _DTYPES[config.dtype], dev, config.standardize
        )
        if config.optimizer == "lbfgs" and config.precondition:
            # The preconditioner pays off on strongly correlated features (image backbones) but
            # can crawl where the bound is a poor model of the curvature (seen on text
            # features). After PRECONDITIONED_ITERATIONS, heads not yet converged continue with
            # plain L-BFGS from where they are: same objective, same optimum, bounded cost.
            first = replace(config, max_iter=min(config.max_iter, PRECONDITIONED_ITERATIONS))
            theta, n_iter, gn = _lbfgs(prob, first, progress)
            if bool((gn >= config.tol).any()) and n_iter < config.max_iter:
                rest = replace(config, max_iter=config.max_iter - n_iter, precondition=False)
                offset = n_iter
                report = None if progress is None else (lambda i, g: progress(offset + i, g))
                theta, n_more, gn = _lbfgs(prob, rest, report, theta0=theta)
                n_iter += n_more
        elif config.optimizer == "lbfgs":
            theta, n_iter, gn = _lbfgs(prob, config, progress)
        else:
            theta, n_iter, gn = _adam(prob, mask, config, progress)
            # The objective is invariant to a common shift of the C biases; Adam's per-coordinate
            # scaling can introduce one, so return the zero-sum representative (L-BFGS keeps it).
            dc = prob.d * prob.c
            theta[:, dc:] -= theta[:, dc:].mean(dim=1, keepdim=True)
        weights, bias = prob.to_original(theta)
    gn_np = gn.cpu().numpy().astype(np.float64)
    return TrainedHeads(
        weights=weights,
        bias=bias,
        n_iter=int(n_iter),
        converged=gn_np < config.tol,
        final_grad_norm=gn_np,
    )


def head_logits(heads: TrainedHeads, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits of every head on every example: (K, M, C) float64, ``x @ W_k + b_k``.

    Computed in float64 as one (rows, D) @ (D, K*C) matmul per chunk of ``batch_size`` rows.
    """
    if not isinstance(heads, TrainedHeads):
        raise MiascaleError(f"heads must be TrainedHeads, got {type(heads).__name__}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MiascaleError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    x = _check_features(features)
    k, d, c = heads.weights.shape
    if x.shape[1] != d:
        raise MiascaleError(f"features have {x.shape[1]} dims but the heads expect {d}.")
    w = torch.as_tensor(np.ascontiguousarray(heads.weights.transpose(1, 0, 2)).reshape(d, k * c))
    b = torch.as_tensor(heads.bias.reshape(1, k * c))
    out = np.empty((k, x.shape[0], c), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = torch.as_tensor(x[start : start + batch_size])
            z = torch.addmm(b, xb, w).view(-1, k, c)
            out[:, start : start + xb.shape[0], :] = z.permute(1, 0, 2).numpy()
    return out


def train_head_single(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: HeadConfig = HeadConfig(),
    pool_features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train ONE head on all of ``features`` (its training subset): reference path.

    Same objective as :func:`train_heads` (zero init, folded output, ``config.standardize``),
    solved with scipy's L-BFGS-B in float64 numpy -- an independent code path. With
    ``standardize="pool"`` the statistics come from ``pool_features`` (required: the whole pool
    the audit's models share). Uses ``config.l2``, ``config.tol`` (as ``gtol``) and
    ``config.max_iter``; the optimizer and dtype fields are ignored because the optimum is unique.

    Returns:
        weights (D, C) and bias (C,) in the original feature space.
    """
    from scipy.optimize import minimize

    config = _check_config(config)
    n_classes = _check_n_classes(n_classes)
    x = _check_features(features)
    n, d = x.shape
    y = _check_labels(labels, n, n_classes)
    c = n_classes
    if config.standardize == "none":
        mu, sd = np.zeros(d), np.ones(d)
    else:
        if config.standardize == "pool":
            if pool_features is None:
                raise MiascaleError(
                    "train_head_single with standardize='pool' needs pool_features (the pool "
                    "whose statistics set the feature scale)."
                )
            ref = _check_features(pool_features, "pool_features")
            if ref.shape[1] != d:
                raise MiascaleError(f"pool_features have {ref.shape[1]} dims, features {d}.")
        else:
            ref = x
        mu = ref.mean(axis=0)
        sd = np.maximum(ref.std(axis=0), STD_FLOOR)
    xs = (x - mu) / sd
    onehot = np.eye(c)[y]
    l2 = config.l2

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = theta[: d * c].reshape(d, c)
        b = theta[d * c :]
        z = xs @ v + b
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        loss = (lse - z[np.arange(n), y]).mean() + 0.5 * l2 * float((v * v).sum())
        r = (np.exp(z - lse[:, None]) - onehot) / n
        gv = xs.T @ r + l2 * v
        return float(loss), np.concatenate([gv.ravel(), r.sum(axis=0)])

    res = minimize(
        fun,
        np.zeros(d * c + c),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": config.max_iter, "gtol": config.tol, "ftol": 0.0, "maxcor": 20},
    )
    v = res.x[: d * c].reshape(d, c)
    weights = v / sd[:, None]
    c_std = res.x[d * c :] - res.x[d * c :].mean()
    bias = c_std - mu @ weights
    return weights, bias
