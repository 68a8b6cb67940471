"""One head trained alone with scipy: the independent reference the batched heads equal.

Same objective as :func:`miascale.training.heads.train_heads` (docs/design/training.md), solved
with scipy's L-BFGS-B in float64 numpy, one head at a time.
"""

from __future__ import annotations

import numpy as np

from miascale.errors import MiascaleError
from miascale.training.heads import (
    STD_FLOOR,
    HeadConfig,
    _check_config,
    _check_features,
    _check_labels,
    _check_n_classes,
)

__all__ = ["train_head_single"]


def train_head_single(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: HeadConfig | None = None,
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

    config = HeadConfig() if config is None else _check_config(config)
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
