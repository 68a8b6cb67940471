"""Batched per-head L-BFGS for the K head objectives (:mod:`miascale.training.objective`).

:func:`minimize` runs L-BFGS for every head at once, each with its own memory, line search and
stopping (max-abs gradient below ``tol``, or the attack-facing ``phi_tol`` rule); only heads still
running are evaluated. The initial inverse Hessian is the shared :class:`.Preconditioner`;
``dtype="mixed"`` switches the GEMMs from float32 to float64 on rounding.

Contract: docs/design/training.md ("Batched per-head L-BFGS"; measured: benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from miascale.training.objective import HeadObjective
from miascale.training.objective import row_dots as _rowdot
from miascale.training.precondition import Preconditioner

CRAWL_WINDOW = 25
CRAWL_FACTOR = 2.0
"""Preconditioned L-BFGS falls back to plain when max |grad| fell < 2x over 25 iterations."""
PHI_PATIENCE = 3
"""Consecutive iterations a head's phi must stay within ``phi_tol`` x spread to stop."""
PHI_GRAD_GUARD = 100.0
"""... and only once its max-abs gradient is below this x the contract's ``tol`` (a guard
against stalls; in a reduced space (:mod:`.span`) also this x ``HeadConfig.tol``, not x the
reduced tolerance, which would leave the rule off at small S)."""
_FLOOR = 4 * torch.finfo(torch.float64).eps
"""A step must lower a head's objective by more than this relative amount to count as progress."""
MIN_HEADS_FOR_PHI = 4
"""The phi rule needs a spread across models: it is off with fewer heads than this."""
COMPACT_BELOW = 0.75
"""The working set drops the heads stopped for good once those still running are fewer than this
fraction of it, so that the vector work follows the running heads rather than K."""


PAIR_FLOOR = {torch.float64: 1e-12, torch.float32: 1e-5}
"""A pair is kept only when ``s . y`` exceeds this x ``|s| |y|`` (by the state's dtype: float32
dots over P terms are good to about 1e-6 of that)."""


def max_abs_rows(g: torch.Tensor) -> torch.Tensor:
    """Max-abs component of each row, float64 (k,): two reductions, no (K, P) temporary (4x
    faster than ``abs().amax()``, 20x than an infinity norm on CPU)."""
    return torch.maximum(g.amax(dim=1), g.amin(dim=1).neg_()).to(torch.float64)


@dataclass(frozen=True)
class LbfgsOptions:
    """What :func:`minimize` needs from a ``HeadConfig`` (see there)."""

    tol: float
    phi_tol: float
    phi_guard: float  # the phi rule applies below this max-abs gradient
    max_iter: int
    history: int
    precondition: bool
    mixed: bool


@dataclass(frozen=True)
class LbfgsResult:
    theta: torch.Tensor  # (K, P)
    n_iter: int
    grad_norm: torch.Tensor  # (K,) max-abs gradient component
    phi_stopped: torch.Tensor  # (K,) bool: stopped by the phi rule before reaching tol


def minimize(
    prob: HeadObjective,
    opts: LbfgsOptions,
    progress: Callable[[int, float], object] | None = None,
    theta0: torch.Tensor | None = None,
) -> LbfgsResult:
    """Minimise every head's objective from ``theta0`` (default zero; docs/design/training.md)."""
    theta = torch.zeros(prob.k, prob.n_params, dtype=torch.float64, device=prob.device)
    if theta0 is not None:
        theta.copy_(theta0)
    done = torch.zeros(prob.k, dtype=torch.bool, device=prob.device)
    precondition, n_iter = opts.precondition, 0
    while True:
        theta, its, gn, done, crawled = _run(
            prob, opts, theta, done, precondition, n_iter, progress
        )
        n_iter += its
        if not (crawled and n_iter < opts.max_iter):
            return LbfgsResult(theta, n_iter, gn, done & (gn >= opts.tol))
        precondition = False


def _phi_spread(phi: torch.Tensor) -> float:
    """Median over pool examples of the standard deviation of phi across the heads."""
    return float(phi.std(dim=0).median())


def _run(
    prob: HeadObjective,
    opts: LbfgsOptions,
    theta: torch.Tensor,
    done: torch.Tensor,
    precondition: bool,
    it0: int,
    progress: Callable[[int, float], object] | None,
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, bool]:
    """One phase (preconditioned or plain) of batched L-BFGS from ``theta``.

    The vector state (gradients, directions, memory pairs) is kept in the GEMMs' precision
    ``prob.dtype`` and moves to float64 with them (``mixed``): in float32 the vector work, which
    is memory-bound, reads half the bytes (docs/design/training.md). The parameters, the
    objective, the step lengths and the memory's inner products stay float64.

    Returns theta, iterations run, max-abs gradients, heads stopped by the phi rule, and
    whether the preconditioned phase was left because it crawled.
    """
    k, p = prob.k, prob.n_params
    f64 = torch.float64
    dev = prob.device
    m = opts.history
    if precondition and prob.preconditioner is None:
        prob.preconditioner = Preconditioner(prob, prob.l2)
    pre = prob.preconditioner if precondition else None
    use_phi = opts.phi_tol > 0 and k >= MIN_HEADS_FOR_PHI
    f, g, phi = prob.value_and_grad(theta)
    gn = max_abs_rows(g)
    # The working set: the heads ``rows`` (None: all K, in order); every head's theta, gn, done
    # and phi are in the full_* tensors, with the working set's rows written back as it shrinks.
    rows: torch.Tensor | None = None
    full_theta = full_gn = full_done = full_phi = None

    def results() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if rows is None:
            return theta, gn, done
        full_theta[rows], full_gn[rows], full_done[rows], full_phi[rows] = theta, gn, done, phi
        return full_theta, full_gn, full_done

    mem = _Pairs(m, k, p, dev, prob.dtype)
    rho = torch.zeros(m, k, dtype=f64, device=dev)  # 0 marks an unused slot for that head
    gamma = torch.ones(k, dtype=f64, device=dev)
    has_hist = torch.zeros(k, dtype=torch.bool, device=dev)
    stalls = torch.zeros(k, dtype=torch.int64, device=dev)
    calm = torch.zeros(k, dtype=torch.int64, device=dev)
    worst: list[float] = []
    n_iter = 0
    c1 = 1e-4
    for it in range(1, opts.max_iter - it0 + 1):
        active = (gn >= opts.tol) & ~done & (stalls < 3)
        if not bool(active.any()):
            break
        worst.append(float(gn[active].max()))
        if pre is not None and len(worst) > CRAWL_WINDOW:
            if worst[-1 - CRAWL_WINDOW] < CRAWL_FACTOR * worst[-1]:
                theta, gn, done = results()
                return theta, n_iter, gn, done, True
        # heads stopped for good (the phi rule, or stalled): out of the working set. Heads below
        # tol stay: float64 gradients (``mixed``) can bring them back.
        running = ~done & (stalls < 3)
        if int(running.sum()) < COMPACT_BELOW * running.numel():
            keep = running.nonzero().squeeze(1)
            if rows is None:
                full_theta, full_gn, full_done, full_phi = (
                    t.clone() for t in (theta, gn, done, phi)
                )
                rows = keep
            else:
                results()
                rows = rows[keep]
            theta, f, g, phi, gn, gamma, has_hist, stalls, calm, done, active = (
                t[keep] for t in (theta, f, g, phi, gn, gamma, has_hist, stalls, calm, done, active)
            )
            rho = rho[:, keep]
            mem.select(keep)
        n_iter = it
        direction, gd = _direction(g, mem, rho, gamma, has_hist, pre, rows)
        new_theta, new_f, new_g, new_phi, taken = _line_search(
            prob, theta, f, g, phi, direction, gd, active, c1, rows
        )
        failed = active & (taken == 0)
        # No decrease beyond float64 rounding (line search failed, or accepted at the floor:
        # decreases of an ulp or two can go on for ever once the gradient is at its noise level).
        no_progress = active & (failed | ~(new_f < f - _FLOOR * f.abs()))
        if bool(no_progress.any()) and opts.mixed and prob.dtype != f64:
            # float32 rounding now limits a head: everything continues in float64 from here.
            # The state too: the memory is read back in float64 (its inner products recomputed).
            prob.set_dtype(f64)
            g = g.to(f64)
            mem.to_dtype(f64, g)
            new_f, new_g, new_phi = prob.value_and_grad(new_theta, rows)
            if rows is not None:  # the heads out of the working set: their gn and phi in float64
                out = torch.ones(k, dtype=torch.bool, device=dev)
                out[rows] = False
                out = out.nonzero().squeeze(1)
                _, g_out, phi_out = prob.value_and_grad(full_theta[out], out)
                full_gn[out] = max_abs_rows(g_out)
                full_phi = full_phi.to(f64)
                full_phi[out] = phi_out
            failed = torch.zeros_like(failed)
            no_progress = torch.zeros_like(no_progress)
        # (a stalled head keeps its count: were it reset while the head sits out, heads at the
        # rounding floor would take turns for ever)
        stalls = torch.where(no_progress, stalls + 1, torch.where(active, 0, stalls))
        if bool(failed.any()):
            rho[:, failed] = 0.0
            gamma[failed] = 1.0
            has_hist = has_hist & ~failed
        moved = active & ~failed
        s, yv = mem.next_slot()  # the newest pair, written in place (state's dtype)
        torch.mul(direction, taken.to(g.dtype)[:, None], out=s)
        torch.sub(new_g, g, out=yv)
        sy = mem.store(new_g)
        yy = _rowdot(yv, yv)
        floor = PAIR_FLOOR[s.dtype] * yy.sqrt() * s.norm(dim=1).to(f64)
        good = moved & (sy > floor) & (yy > 0)
        # Slots with rho = 0 are ignored by the two-loop recursion, so pairs are kept as they are.
        rho[mem.pos] = torch.where(good, 1.0 / sy.clamp(min=1e-300), torch.zeros_like(sy))
        if pre is not None:
            # Curvature of the data term relative to the bound, fitted to the newest pair:
            # with y_data = y - l2*s_V ~ gamma * B s, gamma = y_data^T B^+ y_data / s^T y_data.
            dc = prob.d * prob.c
            y_data = torch.sub(yv, s, alpha=prob.l2)
            y_data[:, dc:] = yv[:, dc:]  # the bias is not regularised
            data_sy = _rowdot(s, y_data)
            ratio = pre.inverse_bound_curvature(y_data, rows) / data_sy.clamp(min=1e-300)
            upd = good & (data_sy > 0) & torch.isfinite(ratio) & (ratio > 0)
            gamma = torch.where(upd, ratio.clamp(min=1e-8, max=2.0), gamma)
        else:
            gamma = torch.where(good, sy / yy.clamp(min=1e-300), gamma)
        has_hist = has_hist | good
        mem.advance()
        gn = max_abs_rows(new_g)
        if use_phi:
            change = (new_phi - phi).abs().amax(dim=1)
            if rows is not None:
                full_phi[rows] = new_phi  # the spread is across all K heads
            spread = _phi_spread(new_phi if rows is None else full_phi)
            still = moved & (change <= opts.phi_tol * spread) & (gn < opts.phi_guard)
            calm = torch.where(still, calm + 1, torch.where(active, 0, calm))
            done = done | (calm >= PHI_PATIENCE)
        theta, f, g, phi = new_theta, new_f, new_g, new_phi
        if progress is not None:
            left = (gn >= opts.tol) & ~done
            progress(it0 + it, float(gn[left].max()) if bool(left.any()) else 0.0)
    theta, gn, done = results()
    return theta, n_iter, gn, done, False


class _Pairs:
    """The K heads' L-BFGS memory: pairs ``s_i, y_i`` in ``m`` slots (the newest at ``pos - 1``)
    and their inner products ``sy[:, i, j] = s_i . y_j``, updated as pairs arrive.

    The recursion reads only ``s_i . y_j`` with pair i older than pair j (and ``i = j``). With
    those it reads the memory in three batched passes instead of ``4 m`` row-wise ones, and a
    new pair's inner products cost one more (the vector work is memory-bound:
    benchmarks/README.md): ``s_g[:, i] = s_i . g`` at the current gradient is kept, so that
    ``s_i . y = s_i . g_new - s_i . g`` for the new ``y = g_new - g``.

    The pairs are kept in the state's ``dtype``, the inner products in float64.
    """

    def __init__(self, m: int, k: int, p: int, device: torch.device, dtype: torch.dtype) -> None:
        f64 = torch.float64
        # slots fill in order: only the first ``n`` are ever read (no zero-filling, and passes
        # over a part-filled memory read only what it holds)
        self.s = torch.empty(k, m, p, dtype=dtype, device=device)
        self.y = torch.empty(k, m, p, dtype=dtype, device=device)
        self.sy = torch.zeros(k, m, m, dtype=f64, device=device)
        self.s_g = torch.zeros(k, m, dtype=f64, device=device)  # s_i . g (empty slots: 0)
        self.m, self.pos, self.n = m, 0, 0

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled slots' ``s`` and ``y``, (K, n, P) views."""
        return self.s[:, : self.n], self.y[:, : self.n]

    def next_slot(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (K, P) of slot ``pos``, where the caller writes the newest ``s`` and ``y``
        before :meth:`store` (no copies)."""
        return self.s[:, self.pos], self.y[:, self.pos]

    def store(self, g_new: torch.Tensor) -> torch.Tensor:
        """Take the newest pair ``s``, ``y = g_new - g`` written into :meth:`next_slot`; returns
        ``s . y`` per head. (Row ``pos`` of ``sy``, ``s . y_j`` for the older pairs, is never
        read.)"""
        slot = self.pos
        self.n = max(self.n, slot + 1)
        s_g_new = torch.zeros_like(self.s_g)
        s_g_new[:, : self.n] = self.dots(self.filled()[0], g_new)  # the new pair's s . g_new too
        s_y = s_g_new - self.s_g  # s_i . y (the new slot's is overwritten next)
        s_y[:, slot] = _rowdot(self.s[:, slot], self.y[:, slot])
        self.sy[:, :, slot] = s_y
        self.s_g = s_g_new
        return s_y[:, slot]

    @staticmethod
    def dots(pairs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``pairs[:, i] . v`` per head, float64 (K, m); as ``v^T pairs^T`` (3x faster than
        ``pairs v`` on CPU for these shapes)."""
        return torch.bmm(v.unsqueeze(1), pairs.transpose(1, 2)).squeeze(1).to(torch.float64)

    def to_dtype(self, dtype: torch.dtype, g: torch.Tensor) -> None:
        """The pairs in ``dtype`` from now on, their inner products recomputed in it (``g``:
        the current gradient, for ``s_g``)."""
        n = self.n
        for name in ("s", "y"):
            old = getattr(self, name)
            new = torch.empty(old.shape, dtype=dtype, device=old.device)
            new[:, :n] = old[:, :n]
            setattr(self, name, new)
        s, y = self.filled()
        self.sy[:, :n, :n] = torch.bmm(s, y.transpose(1, 2)).to(self.sy.dtype)
        self.s_g[:, :n] = self.dots(s, g)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the heads ``keep`` (increasing indices into the current heads).

        The pairs move to the front of their own storage, head by head (``keep[j] >= j``, so a
        row is read before it is overwritten): a gathered copy faults in fresh memory the size
        of the kept pairs at each shrink, 20-26 ms against 5 ms per (257, 10, 12,810) float32
        tensor keeping 140 heads (benchmarks/README.md)."""
        n = self.n
        for j, i in enumerate(keep.tolist()):
            if i != j:
                self.s[j, :n] = self.s[i, :n]
                self.y[j, :n] = self.y[i, :n]
        k = keep.numel()
        self.s, self.y = self.s[:k], self.y[:k]
        self.sy, self.s_g = self.sy[keep], self.s_g[keep]

    def advance(self) -> None:
        self.pos = (self.pos + 1) % self.m

    def newest_first(self) -> list[int]:
        """The filled slots, newest first."""
        return [(self.pos - 1 - j) % self.m for j in range(self.n)]


def _direction(
    g: torch.Tensor,
    mem: _Pairs,
    rho: torch.Tensor,
    gamma: torch.Tensor,
    has_hist: torch.Tensor,
    pre: Preconditioner | None,
    heads: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L-BFGS search direction of every head (two-loop recursion, newest pair first) and its
    inner product with ``g`` (float64); ``heads``: which of the problem's heads the rows are
    (None: all, in order).

    The recursion's row dots are formed from ``s_i . g``, ``y_i . r0`` and the stored
    ``s_i . y_j`` (unprocessed coefficients are zero), so that ``q = g - sum a_i y_i`` and
    ``r = r0 + sum (a_i - b_i) s_i`` are each one batched pass over the memory.
    """
    k, m = g.shape[0], mem.m
    order = mem.newest_first()
    rho_t = rho.t()  # (K, m)
    s_g = mem.s_g  # (K, m): s_i . g
    a = torch.zeros(k, m, dtype=torch.float64, device=g.device)  # coefficients: float64
    for slot in order:
        a[:, slot] = rho_t[:, slot] * (s_g[:, slot] - (a * mem.sy[:, slot, :]).sum(dim=1))
    n = mem.n
    mem_s, mem_y = mem.filled()
    dt = g.dtype
    q = torch.baddbmm(g.unsqueeze(1), a[:, None, :n].to(dt), mem_y, alpha=-1.0).squeeze(1)
    q = pre.apply(q, gamma, heads) if pre is not None else q.mul_(gamma.to(dt)[:, None])
    y_r = mem.dots(mem_y, q)  # (K, n): y_i . r0
    coef = torch.zeros_like(a)
    for slot in reversed(order):
        b = rho_t[:, slot] * (y_r[:, slot] + (coef * mem.sy[:, :, slot]).sum(dim=1))
        coef[:, slot] = a[:, slot] - b
    direction = torch.baddbmm(q.unsqueeze(1), coef[:, None, :n].to(dt), mem_s).squeeze(1).neg_()
    gd = _rowdot(g, direction)
    bad = ~(gd < 0) | ~has_hist
    if bool(bad.any()):
        # Heads without (usable) curvature memory: preconditioned steepest descent with a unit
        # step and gamma = 1 (a majorisation step under the bound), or a gradient step scaled to
        # unit length on the first iteration.
        reset = bad & has_hist
        if bool(reset.any()):
            rho[:, reset] = 0.0
            gamma[reset] = 1.0
        if pre is not None:
            # Heads without history already got -P^{-1} g from the recursion above.
            sd_dir = -pre.apply(g, gamma, heads) if bool(reset.any()) else direction
        else:
            gnorm2 = g.norm(dim=1).clamp(min=torch.finfo(g.dtype).tiny)  # (a zero gradient: 0)
            sd_dir = -g / torch.where(has_hist, torch.ones_like(gnorm2), gnorm2)[:, None]
        direction = torch.where(bad[:, None], sd_dir, direction)
        gd = torch.where(bad, _rowdot(g, sd_dir), gd)
    return direction, gd


def _line_search(
    prob: HeadObjective,
    theta: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    phi: torch.Tensor,
    direction: torch.Tensor,
    gd: torch.Tensor,
    active: torch.Tensor,
    c1: float,
    heads: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head backtracking Armijo search; each trial evaluates only the pending heads
    (``heads``: which of the problem's heads the rows are, None: all, in order).

    Returns the new theta, objective, gradient and phi, and the step length taken (K,), 0 for
    heads that did not move (inactive, or no step accepted in 40 trials)."""
    k = theta.shape[0]
    step = torch.where(active, torch.ones_like(f), torch.zeros_like(f))
    pending = active.clone()
    new_theta = new_f = new_g = new_phi = None
    for _ in range(40):
        idx = pending.nonzero().squeeze(1)
        every = idx.numel() == k
        if every:  # all heads pending: no gathers (float64 theta, direction in the state's dtype)
            trial = torch.addcmul(theta, step[:, None], direction)
        else:
            trial = torch.addcmul(theta[idx], step[idx, None], direction[idx])
        ft, gt, pt = prob.value_and_grad(
            trial, (None if every else idx) if heads is None else (heads if every else heads[idx])
        )
        ok = torch.isfinite(ft) & (ft <= f[idx] + c1 * step[idx] * gd[idx])
        if every and bool(ok.all()):  # the common first trial: every unit step accepted
            return trial, ft, gt, pt, step
        if new_theta is None:
            new_theta, new_f, new_g, new_phi = theta.clone(), f.clone(), g.clone(), phi.clone()
        acc = idx[ok]
        new_theta[acc], new_f[acc], new_g[acc] = trial[ok], ft[ok], gt[ok]
        new_phi[acc] = pt[ok]
        pending[acc] = False
        if not bool(pending.any()):
            break
        # Safeguarded quadratic interpolation, within [0.1, 0.5] of the current step.
        rej, st, gdr = idx[~ok], step[idx[~ok]], gd[idx[~ok]]
        denom = 2.0 * (ft[~ok] - f[rej] - gdr * st)
        interp = torch.where(torch.isfinite(denom) & (denom > 0), -gdr * st * st / denom, 0.5 * st)
        step[rej] = torch.minimum(torch.maximum(interp, 0.1 * st), 0.5 * st)
    return new_theta, new_f, new_g, new_phi, torch.where(pending, 0.0, step)
