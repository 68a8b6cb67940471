"""The initial inverse Hessian that batched L-BFGS (:mod:`.lbfgs`) gives every head.

:class:`Preconditioner` is built once per pool and shared by all K heads: the inverse of a
scaled Böhning bound ``gamma_k * A (x) Sigma (+) A + l2 I`` on the pool's feature covariance,
and, once a head fitted to the whole pool is known (:meth:`Preconditioner.at`), the inverse of
that head's exact Hessian on the top eigen-directions of ``Sigma`` with the bound on the rest.

Contract: docs/design/training.md ("Preconditioning"; measured: benchmarks/README.md).
"""

from __future__ import annotations

import copy

import torch

from miascale.training.objective import ROWS_FIRST_MIN, STD_FLOOR, HeadObjective, row_dots

BOUND_CUT = (0.01, 16.0)
"""The bound keeps eigenvalues of ``Sigma`` exactly when they are at least this fraction of its
trace and this many average examples' share (trace/N each); the rest are flattened."""
CURVATURE_CUT = (0.002, 4.0)
"""The same cut for the exact-curvature block of :meth:`Preconditioner.at` (more directions:
the Hessian is a good model where the bound is not; measured: benchmarks/README.md)."""


def _eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric eigendecomposition by LAPACK's divide and conquer (``syevd``) via scipy.

    torch's CPU ``linalg.eigh`` in float64 is much slower (measured: benchmarks/README.md).
    """
    from scipy.linalg import eigh

    lam, u = eigh(a.cpu().numpy(), driver="evd", check_finite=False)
    return torch.as_tensor(lam, device=a.device), torch.as_tensor(u, device=a.device)


def _times(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; with fewer than ``ROWS_FIRST_MIN`` rows (a few heads) as one product per row
    (a batched GEMM over ``b`` broadcast, no copy): MKL rounds small GEMMs differently with 1
    and 2 threads in either orientation, and a sweep must give the same numbers in a one-thread
    worker as locally (tested)."""
    if a.shape[0] >= ROWS_FIRST_MIN:
        return a @ b
    return torch.bmm(a.unsqueeze(1), b.expand(a.shape[0], *b.shape)).squeeze(1)


class Preconditioner:
    """Inverse of a scaled Böhning bound, shared by all heads (docs/design/training.md).

    ``B = A (x) Sigma (+) A`` bounds the Hessian of the data term for (V, c), with
    ``A = (I - 11^T/C)/2`` and ``Sigma`` the covariance of the WHOLE pool standardised with pool
    statistics. ``Sigma`` is kept as its top eigenpairs ``Q, lam`` (cut by ``BOUND_CUT``) plus
    one flat value ``lam_tail`` (the largest eigenvalue dropped) for the rest. Head k's
    preconditioner is ``P_k = gamma_k * B + l2 * I_V``; applying its inverse to all heads is two
    GEMMs, (K*C, D) x (D, r) and back, with r the kept rank, plus elementwise work.

    :meth:`at` replaces the ``(Q, bias)`` block by the exact data Hessian of one head on the
    whole pool (the start head), without ``gamma_k``.
    """

    def __init__(self, prob: HeadObjective, l2: float) -> None:
        n, d = prob.n, prob.d
        xc = prob.xc64  # globally centred
        if prob.standardized:  # the heads' parameters live on (approximately) the pool's scale
            xs = xc / (xc * xc).mean(dim=0).sqrt().clamp(min=STD_FLOOR)
        else:
            xs = xc
        # eigenpairs of Sigma from the smaller of the (N, N) Gram and (D, D) covariance matrices,
        # in the GEMMs' precision (a preconditioner needs no more; float32 halves this set-up)
        w = xs.to(prob.dtype)
        gram = w @ w.t() / n if n <= d else w.t() @ w / n
        lam, u = (t.to(torch.float64) for t in _eigh(gram))
        self._spectrum = (xs, lam.clamp(min=0.0), u)
        # l2 = 0: the bound alone is singular; regularise the preconditioner only.
        self.l2 = l2 if l2 > 0 else 1e-6 * max(float(lam.clamp(min=0.0).sum()), 1.0) / d
        self._keep(*BOUND_CUT)
        # A feature constant on head k's subset (sd_k floored) has x~ = 0 there: its weights feel
        # only the regulariser and stay exactly 0 from the zero start. The shared Sigma knows
        # nothing of that, so such coordinates are masked out of P_k^{-1} (else they pick up
        # weights ~ tol/l2 that the folding W = V/sd_k blows up by 1/STD_FLOOR).
        self.live = (prob.sd > STD_FLOOR).to(prob.sd.dtype)  # (K, D)
        self.all_live = bool(self.live.all())  # the common case: no mask to apply
        self.d, self.c = d, prob.c
        self.casts: dict = {}  # (q, q_t, block, live) in a state dtype other than float64
        self.block = None  # (M, M) inverse of the exact-curvature block, M = (rank + 1) * C
        self.n_apply = 0  # head-applications and head-curvatures (flop counting in benchmarks)
        self.n_curv = 0

    def _keep(self, cut: float, examples: float) -> None:
        """Keep the eigenpairs of ``Sigma`` above the cut as ``q, lam``; the rest is flat."""
        xs, lam, u = self._spectrum
        n, d = xs.shape
        keep = (lam >= max(cut, examples / n) * float(lam.sum())) & (lam > 0)
        self.lam_tail = float(lam[~keep].max()) if bool((~keep).any()) else 0.0
        lam, u = lam[keep], u[:, keep]
        q = (xs.t() @ u) / (lam * n).sqrt() if n <= d else u
        self.rank = int(lam.shape[0])
        self.lam = lam
        self.q = q.contiguous()
        self.q_t = q.t().contiguous()
        self.casts = {}

    def _in(self, dtype: torch.dtype) -> tuple:
        """``q, q_t, block, live`` in ``dtype`` (the optimizer state's: :mod:`.lbfgs`)."""
        if dtype == torch.float64:
            return self.q, self.q_t, self.block, self.live
        if dtype not in self.casts:
            block = None if self.block is None else self.block.to(dtype)
            self.casts[dtype] = (self.q.to(dtype), self.q_t.to(dtype), block, self.live.to(dtype))
        return self.casts[dtype]

    def at(self, prob: HeadObjective, theta: torch.Tensor) -> Preconditioner:
        """A copy whose top block (cut by ``CURVATURE_CUT``) is the exact data Hessian at
        ``theta`` (P,), a head of ``prob`` fitted to the WHOLE pool (every example 1/N).

        In coordinates ``a_i = [Q^T x~_i, 1]`` (weights on the kept directions, then the bias)
        that Hessian is ``H = sum_i (a_i a_i^T) (x) W_i / N`` with ``W_i = diag(p_i) - p_i
        p_i^T``; the block's inverse is ``(H + l2 I)^{-1}``, the same for every head. A head
        on half the pool has the same expected Hessian (its examples weigh 1/n_k = 2/N).
        """
        new = copy.copy(self)  # shares the spectrum and the live mask
        new.n_apply = new.n_curv = 0
        new._keep(*CURVATURE_CUT)
        xs, c = self._spectrum[0], self.c
        u0, off0 = prob.folded(theta[None])
        p = torch.softmax(prob.xc64 @ u0[0] + off0[0], dim=1)  # (N, C) on the whole pool
        a = torch.cat([xs @ new.q, torch.ones_like(xs[:, :1])], dim=1)  # (N, r + 1)
        w = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / xs.shape[0]  # (N, C, C)
        r1 = a.shape[1]
        h = torch.empty(r1, c, r1, c, dtype=torch.float64, device=a.device)
        for c1 in range(c):
            for c2 in range(c1, c):
                h[:, c1, :, c2] = a.t() @ (a * w[:, c1, c2, None])
                h[:, c2, :, c1] = h[:, c1, :, c2]
        lam_h, v = _eigh(h.reshape(r1 * c, r1 * c))
        new.block = (v / (lam_h.clamp(min=0.0) + new.l2)) @ v.t()
        new.casts = {}
        return new

    def _live(self, live: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor | None:
        """The live mask ``live`` (K, D) of the heads ``heads`` (None: all) as (k, 1, D), or
        None when every feature is live; a mask built for one head (the start head's,
        :meth:`at`) serves every head."""
        if self.all_live:
            return None
        one = heads is None or live.shape[0] == 1
        return (live if one else live[heads])[:, None, :]

    def apply(
        self, g: torch.Tensor, gamma: torch.Tensor, heads: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``P_k^{-1} g`` for every head, g (k, P) -> (k, P) in g's dtype, gamma (k,); the rows
        are the heads ``heads`` (None: all, in order). Weights are class-major (k, C, D) in
        ``g`` (:mod:`.objective`), so both GEMMs read and write them in place."""
        k, d, c, dt = g.shape[0], self.d, self.c, g.dtype
        q, q_t, block, live = self._in(dt)
        live = self._live(live, heads)
        self.n_apply += k
        out = torch.empty_like(g)
        gv = g[:, : d * c].view(k, c, d)
        gmean = gv.mean(dim=1, keepdim=True)  # (k, 1, D): the class mean, scaled by 1/l2
        u = gv - gmean
        if live is not None:
            u.mul_(live)
        tail = (1.0 / (0.5 * self.lam_tail * gamma + self.l2)).to(dt)  # (k,)
        h = _times(u.view(k * c, d), q).view(k, c, -1)  # (k, C, r)
        gc = g[:, d * c :]
        gc = gc - gc.mean(dim=1, keepdim=True)
        if block is None:
            scale = 1.0 / (0.5 * self.lam[None, :] * gamma[:, None] + self.l2)
            h.mul_(scale.to(dt)[:, None, :] - tail[:, None, None])
            out[:, d * c :] = (2.0 / gamma[:, None]) * gc
        else:  # the exact block on (Q, bias), the bound's tail on the rest
            rhs = torch.cat([h, gc[:, :, None]], dim=2).permute(2, 1, 0).reshape(-1, k)
            sol = (block @ rhs).view(-1, c, k).permute(2, 1, 0)  # (k, C, r + 1)
            h = sol[:, :, :-1] - h * tail[:, None, None]
            out[:, d * c :] = sol[:, :, -1]
        ov = out[:, : d * c].view(k, c, d)
        u.mul_(tail[:, None, None]).view(k * c, d).add_(_times(h.reshape(k * c, -1), q_t))
        torch.add(u, gmean, alpha=1.0 / self.l2, out=ov)
        if live is not None:
            ov.mul_(live)
        return out

    def inverse_bound_curvature(
        self, y: torch.Tensor, heads: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``y^T B_k^+ y`` per head (B_k: head k's bound as approximated in :meth:`apply`),
        float64 (k,) whatever y's dtype."""
        k, d, c, f64 = y.shape[0], self.d, self.c, torch.float64
        q, _, _, live = self._in(y.dtype)
        live = self._live(live, heads)
        self.n_curv += k
        yv = y[:, : d * c].view(k, c, d)
        u = yv - yv.mean(dim=1, keepdim=True)
        if live is not None:
            u.mul_(live)
        inv_tail = 1.0 / self.lam_tail if self.lam_tail > 0 else 0.0  # pseudo-inverse
        flat = u.view(k, c * d)
        tot = 2.0 * inv_tail * row_dots(flat, flat)
        h = _times(u.view(k * c, d), q).view(k, c, -1)
        tot += 2.0 * ((h * h).sum(dim=1).to(f64) * (1.0 / self.lam - inv_tail)[None, :]).sum(1)
        yc = y[:, d * c :].to(f64)
        yc = yc - yc.mean(dim=1, keepdim=True)
        return tot + 2.0 * (yc * yc).sum(dim=1)
