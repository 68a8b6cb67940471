"""The K head objectives of :mod:`miascale.training.heads`, evaluated together.

:class:`HeadObjective` holds ``theta`` (K, P) as ``P = D*C + C`` (weights in standardised space,
then the bias) and evaluates any subset of the heads with two GEMMs over the pool; the same pass
yields every evaluated head's LiRA statistic ``phi`` on the pool, for the stopping rule.

Contract: docs/design/training.md ("The K objectives, evaluated together").
"""

from __future__ import annotations

import numpy as np
import torch

STD_FLOOR = 1e-6
"""Per-feature standard deviations below this are replaced by it (original feature units)."""


class HeadObjective:
    """All K objectives (see :mod:`miascale.training.heads` for the contract)."""

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
        # Global centering (exact reparametrisation, improves float32 matmuls).
        self.center = x.mean(axis=0)
        xc64 = torch.as_tensor(x - self.center, dtype=f64, device=device)
        m = torch.as_tensor(mask, dtype=f64, device=device)
        counts = m.sum(dim=1)
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
        # (N, K) per-example weights 1/n_k on T_k
        self.weight_t = (m * inv_n[:, None]).t().contiguous()
        self.y = torch.as_tensor(y, device=device)
        self.onehot = torch.nn.functional.one_hot(self.y, n_classes).to(f64)  # (N, C)
        self.n_params = d * n_classes + n_classes
        self.n_evals = 0  # evaluations, and head-evaluations (for benchmarks)
        self.n_head_evals = 0
        self.preconditioner = None
        self.set_dtype(dtype)

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Precision of the two big GEMMs (everything else stays float64)."""
        self.dtype = dtype
        self.xc = self.xc64.to(dtype)
        self.xc_t = self.xc.t().contiguous()

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dc = self.d * self.c
        k = theta.shape[0]
        return theta[:, :dc].reshape(k, self.d, self.c), theta[:, dc:]

    def folded(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-space-offset form: logits = xc @ U + off (xc globally centred), all heads."""
        v, c = self.split(theta)
        u = v / self.sd[:, :, None]
        off = c - torch.einsum("kd,kdc->kc", self.mu_c, u)
        return u, off

    def value_and_grad(
        self, theta: torch.Tensor, heads: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective (k,), gradient (k, P) and phi (N, k) of the heads ``heads`` (all if None).

        ``theta`` holds the parameters of those heads only, (k, P). Float64 results; the two
        GEMMs of size N x D x k*C run in ``self.dtype``.
        """
        self.n_evals += 1
        d, c, n = self.d, self.c, self.n
        k = theta.shape[0]
        self.n_head_evals += k
        f64 = torch.float64
        if heads is None:
            inv_sd_t, mu_c_t, mu_c, inv_sd = self.inv_sd_t, self.mu_c_t, self.mu_c, self.inv_sd
            weight_t = self.weight_t
        else:
            inv_sd_t, mu_c_t = self.inv_sd_t[:, heads], self.mu_c_t[:, heads]
            mu_c, inv_sd, weight_t = self.mu_c[heads], self.inv_sd[heads], self.weight_t[:, heads]
        y_idx = self.y.view(n, 1, 1).expand(n, k, 1)
        v, bias = self.split(theta)
        # U in (D, k, C) layout so that it is directly the (D, k*C) GEMM operand.
        u = torch.mul(v.permute(1, 0, 2), inv_sd_t[:, :, None]).contiguous()
        off = bias - torch.einsum("dk,dkc->kc", mu_c_t, u)
        z = self.xc @ u.view(d, k * c).to(self.dtype)
        z = z.to(f64).view(n, k, c)
        z.add_(off[None])
        z.sub_(z.amax(dim=2, keepdim=True))
        z_true = z.gather(2, y_idx).squeeze(2)  # (N, k), shifted logit of the true class
        e = z.exp_()
        se = e.sum(dim=2, keepdim=True)
        e.scatter_(2, y_idx, 0.0)
        other = e.sum(dim=2)  # sum over the wrong classes, without cancellation
        ce = se.squeeze(2).log().sub_(z_true)  # (N, k) cross-entropy
        phi = z_true - other.clamp(min=1e-300).log()
        f = (ce * weight_t).sum(dim=0)
        # Residuals (softmax - onehot) weighted by 1/n_k on each model's subset; the true
        # class's residual p_y - 1 = -other/se is formed without cancellation.
        r = e.div_(se)
        r.scatter_(2, y_idx, (-other / se.squeeze(2)).unsqueeze(2))
        r.mul_(weight_t[:, :, None])
        g_c = r.sum(dim=0)  # (k, C)
        g_raw = (self.xc_t @ r.view(n, k * c).to(self.dtype)).to(f64).view(d, k, c)
        g = torch.empty(k, self.n_params, dtype=f64, device=self.device)
        g_v = g[:, : d * c].view(k, d, c)
        g_v.copy_(g_raw.permute(1, 0, 2))
        g_v.addcmul_(mu_c[:, :, None], g_c[:, None, :], value=-1.0)
        g_v.mul_(inv_sd[:, :, None])
        if self.l2:
            g_v.add_(v, alpha=self.l2)
            f = f + 0.5 * self.l2 * (theta[:, : d * c] * theta[:, : d * c]).sum(dim=1)
        g[:, d * c :] = g_c
        return f, g, phi

    def to_original(self, theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        u, off = self.folded(theta)
        center = torch.as_tensor(self.center, dtype=torch.float64, device=self.device)
        bias = off - torch.einsum("d,kdc->kc", center, u)
        return u.cpu().numpy().copy(), bias.cpu().numpy().copy()
