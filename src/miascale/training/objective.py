"""The K head objectives of :mod:`miascale.training.heads`, evaluated together.

:class:`HeadObjective` holds ``theta`` (K, P) as ``P = C*D + C`` (weights in standardised space,
class-major, then the bias) and evaluates any subset of the heads with two GEMMs over the pool; the same pass
yields every evaluated head's LiRA statistic ``phi`` on the pool, for the stopping rule.

Contract: docs/design/training.md ("The K objectives, evaluated together").
"""

from __future__ import annotations

import functools

import numpy as np
import torch

STD_FLOOR = 1e-6
"""Per-feature standard deviations below this are replaced by it (original feature units)."""
ROWS_FIRST_MIN = 64
"""The GEMMs put the k*C axis first (faster) only from this many rows: below it (a few heads
in a line search) MKL's result depends on the thread count, and a sweep must give the same
numbers in a one-thread Ray worker as locally (docs/design/training.md)."""


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two (k, P) tensors, float64 (k,).

    In float64, or with fewer than ``ROWS_FIRST_MIN`` rows, as a batched GEMV: one row is one
    thread's sum, whatever the thread count (``vecdot`` splits a row's sum across threads when
    there are fewer rows than threads). Otherwise float32 rows use ``vecdot``, 2.5x faster than
    a float32 batched GEMV (which is no faster than a float64 one) and parallel over rows."""
    if a.dtype == torch.float64 or a.shape[0] < ROWS_FIRST_MIN:
        return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1).to(torch.float64)
    return torch.linalg.vecdot(a, b).to(torch.float64)


def native_bf16(device: torch.device) -> bool:
    """Whether the CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX): then the
    gradient GEMM of a float32 evaluation runs in bfloat16, at twice the float32 rate
    (measured: benchmarks/README.md). Elsewhere (older CPUs, GPUs) it stays float32."""
    return device.type == "cpu" and _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


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
        bf16_gradient: bool = False,
    ) -> None:
        n, d = x.shape
        k = mask.shape[0]
        f64 = torch.float64
        self.n, self.d, self.k, self.c = n, d, k, n_classes
        self.l2 = float(l2)
        self.device = device
        # Global centering (exact reparametrisation, improves float32 matmuls).
        self.center = x.mean(axis=0, dtype=np.float64)
        xc = x.astype(np.float64)  # (a copy: centred in place)
        xc -= self.center
        xc64 = torch.as_tensor(xc, device=device)
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
            # the pool's mean is 0 to rounding: centring again would only move the
            # (unregularised) bias, so the standardisation is a scaling (no mean term to apply)
            pool_mu = xc64.mean(dim=0)
            pool_sd = ((xc64 * xc64).mean(dim=0) - pool_mu * pool_mu).clamp(min=0.0).sqrt()
            mu = torch.zeros(k, d, dtype=f64, device=device)
            sd = pool_sd.clamp(min=STD_FLOOR).expand(k, d).clone()
        else:  # raw features; the centring only moves the (unregularised) bias
            mu = torch.zeros(k, d, dtype=f64, device=device)
            sd = torch.ones(k, d, dtype=f64, device=device)
        self.mu_c = mu  # standardisation mean, in globally centred coordinates
        self.mu_zero = standardize != "subset"  # then mu_c is exactly 0
        self.sd = sd
        self.inv_sd = 1.0 / sd
        # A feature constant on a head's subset (sd floored) is out of that head's model: its
        # data gradient, formed by cancellation and scaled by 1/STD_FLOOR, is rounding noise, so
        # it is set to 0 there (its weight stays exactly 0 from the zero start; the
        # preconditioner masks it likewise)
        self.inv_sd_grad = self.inv_sd * (sd > STD_FLOOR)
        self.xc64 = xc64
        self.weight = m * inv_n[:, None]  # (K, N) per-example weights 1/n_k on T_k
        self.y = torch.as_tensor(y, device=device)
        self.onehot = torch.nn.functional.one_hot(self.y, n_classes).to(f64)  # (N, C)
        self.n_params = d * n_classes + n_classes
        self.n_evals = 0  # evaluations, and head-evaluations (for benchmarks)
        self.n_head_evals = 0
        self.preconditioner = None
        self.set_dtype(dtype, bf16_gradient)

    def set_dtype(self, dtype: torch.dtype, bf16_gradient: bool = False) -> None:
        """Precision of the two big GEMMs and of the per-example work between them (the
        objective is returned in float64 whatever it is; the gradient and phi in this one).

        ``bf16_gradient`` (float32 only, and only where :func:`native_bf16`): the gradient GEMM
        ``R @ Xc`` takes bfloat16 inputs and output (8 significant bits; the logits, objective
        and phi keep float32, so line searches see the float32 objective)."""
        self.dtype = dtype
        # (mu_c, 1/sd, sd, 1/sd or 0 for the gradient) in the work dtype
        stats = (self.mu_c, self.inv_sd, self.sd, self.inv_sd_grad)
        self.stats = tuple(t.to(dtype) for t in stats)
        self.xc = self.xc64.to(dtype)
        self.xc_t = self.xc.t().contiguous()
        self.weight_work = self.weight.to(dtype)
        fast = bf16_gradient and dtype == torch.float32 and native_bf16(self.device)
        self.xc_bf16 = self.xc64.to(torch.bfloat16) if fast else None

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights V (k, D, C), a view of ``theta``'s class-major (k, C, D) block, and the
        bias (k, C)."""
        dc = self.d * self.c
        k = theta.shape[0]
        return theta[:, :dc].view(k, self.c, self.d).transpose(1, 2), theta[:, dc:]

    def folded(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-space-offset form: logits = xc @ U + off (xc globally centred), all heads."""
        v, c = self.split(theta)
        u = v / self.sd[:, :, None]
        off = c - torch.einsum("kd,kdc->kc", self.mu_c, u)
        return u, off

    def value_and_grad(
        self, theta: torch.Tensor, heads: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective (k,), gradient (k, P) and phi (k, N) of the heads ``heads`` (all if None).

        ``theta`` holds the parameters of those heads only, (k, P), float64. The two GEMMs of
        size k*C x D x N and the per-example work between them run in ``self.dtype``; the
        objective is accumulated and returned in float64, the gradient and phi in
        ``self.dtype`` (:mod:`.lbfgs` keeps its vector state in it).
        Per-example arrays are class-major, (k, C, N), as the weights are in ``theta``: both
        GEMMs then put the long k*C axis first, the faster orientation for these shapes
        (measured: benchmarks/README.md), and nothing is transposed.
        """
        self.n_evals += 1
        d, c, n = self.d, self.c, self.n
        k = theta.shape[0]
        self.n_head_evals += k
        f64, wdt = torch.float64, self.dtype
        mu_c, inv_sd, sd, inv_sd_g = self.stats
        weight, work = self.weight, self.weight_work
        if heads is not None:
            mu_c, inv_sd, sd, inv_sd_g = mu_c[heads], inv_sd[heads], sd[heads], inv_sd_g[heads]
            weight, work = weight[heads], work[heads]
        y_idx = self.y.view(1, 1, n).expand(k, 1, n)
        vt, bias = theta[:, : d * c].view(k, c, d), theta[:, d * c :]  # V^T, class-major
        u = torch.empty(k, c, d, dtype=wdt, device=self.device)  # U^T of all heads
        u.copy_(vt).mul_(inv_sd[:, None, :])
        off = bias.to(wdt, copy=True)
        if not self.mu_zero:
            off.sub_(torch.bmm(u, mu_c.unsqueeze(2)).squeeze(2))
        z = self._times_pool(u.view(k * c, d)).view(k, c, n)
        z.add_(off[:, :, None])
        z.sub_(z.amax(dim=1, keepdim=True))
        z_true = z.gather(1, y_idx).squeeze(1)  # (k, N), shifted logit of the true class
        e = z.exp_()
        se = e.sum(dim=1, keepdim=True)
        e.scatter_(1, y_idx, 0.0)
        other = e.sum(dim=1)  # sum over the wrong classes, without cancellation
        ce = se.squeeze(1).log().sub_(z_true)  # (k, N) cross-entropy
        phi = z_true.sub_(other.clamp(min=torch.finfo(other.dtype).tiny).log())
        f = (ce.to(f64) * weight).sum(dim=1)
        # Residuals (softmax - onehot) weighted by 1/n_k on each model's subset; the true
        # class's residual p_y - 1 = -other/se is formed without cancellation.
        r = e.div_(se)
        r.scatter_(1, y_idx, (-other / se.squeeze(1)).unsqueeze(1))
        r.mul_(work[:, None, :])
        g_c = r.sum(dim=2)  # (k, C); in the work precision (15x faster than a float64
        # accumulation of float32 values, and as accurate as the float32 weight gradient); its
        # exact sum over classes is 0: rounding's common shift of the biases is removed, else a
        # float32 state lets the biases drift along that flat direction
        g_c.sub_(g_c.mean(dim=1, keepdim=True))
        # The weight gradient (g_raw - g_c mu^T) / sd + l2 V, class-major, in the work dtype
        # (V^T = U^T sd: no mixed dtypes, 15x slower on CPU)
        g = torch.empty(k, self.n_params, dtype=wdt, device=self.device)
        gt = g[:, : d * c].view(k, c, d)
        gt.copy_(self._times_pool_t(r.view(k * c, n)).reshape(k, c, d))
        if not self.mu_zero:
            gt.baddbmm_(g_c[:, :, None], mu_c[:, None, :], alpha=-1.0)
        gt.mul_(inv_sd_g[:, None, :])
        if self.l2:
            gt.addcmul_(u, sd[:, None, :], value=self.l2)
            tv = theta[:, : d * c]
            f = f + 0.5 * self.l2 * (tv * tv).sum(dim=1)
        g[:, d * c :] = g_c
        return f, g, phi

    def _times_pool(self, ut: torch.Tensor) -> torch.Tensor:
        """``ut @ Xc^T``: (rows, D) -> (rows, N), contiguous (see ``ROWS_FIRST_MIN``)."""
        if ut.shape[0] >= ROWS_FIRST_MIN:
            return ut @ self.xc_t
        return (self.xc @ ut.t().contiguous()).t().contiguous()

    def _times_pool_t(self, r: torch.Tensor) -> torch.Tensor:
        """``r @ Xc``: (rows, N) -> (rows, D) (see ``ROWS_FIRST_MIN`` and ``set_dtype``)."""
        if r.shape[0] >= ROWS_FIRST_MIN:
            if self.xc_bf16 is not None:
                return r.to(torch.bfloat16) @ self.xc_bf16
            return r @ self.xc
        return (self.xc_t @ r.t().contiguous()).t()

    def to_original(self, theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        u, off = self.folded(theta)
        center = torch.as_tensor(self.center, dtype=torch.float64, device=self.device)
        bias = off - torch.einsum("d,kdc->kc", center, u)
        return u.cpu().numpy().copy(), bias.cpu().numpy().copy()
