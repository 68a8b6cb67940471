"""Batched L-BFGS bookkeeping (`miascale.training.lbfgs`): the directions built from kept inner
products equal a naive two-loop recursion, and shrinking the working set to the heads still
running changes no head."""

import numpy as np
import pytest
import torch

import miascale.training.lbfgs as lbfgs
from miascale.training.heads import HeadConfig, train_heads


def _problem(k=24, n=160, d=40, c=4, seed=5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d) + rng.normal(size=(c, d))[y]
    return x, y, rng.random((k, n)) < 0.5, c


def _naive_direction(g, s, yv, rho, initial):
    """The textbook two-loop recursion for one head, newest pair first: s, yv (m, P) ordered
    oldest to newest, rho (m,), ``initial(q)`` the initial inverse Hessian times q."""
    q = g.clone()
    alphas = []
    for i in reversed(range(len(rho))):
        a = rho[i] * (s[i] @ q)
        alphas.append(a)
        q -= a * yv[i]
    r = initial(q)
    for i, a in zip(range(len(rho)), reversed(alphas), strict=True):
        b = rho[i] * (yv[i] @ r)
        r += (a - b) * s[i]
    return -r


@pytest.mark.parametrize("precondition", [True, False])
def test_directions_equal_a_naive_two_loop_recursion(monkeypatch, precondition):
    checked = []
    real = lbfgs._direction

    def checking(g, mem, rho, gamma, has_hist, pre, heads=None):
        rho0, gamma0 = rho.clone(), gamma.clone()
        d, gd = real(g, mem, rho, gamma, has_hist, pre, heads)
        torch.testing.assert_close(gd, lbfgs._rowdot(g, d))
        order = mem.newest_first()[::-1]  # oldest first
        usable = has_hist & (lbfgs._rowdot(g, d) < 0)
        for row in usable.nonzero().squeeze(1).tolist()[:6]:
            live = [i for i in order if rho0[i, row] != 0]
            if pre is not None:
                who = torch.tensor([row]) if heads is None else heads[row : row + 1]

                def initial(q, row=row, who=who):
                    return pre.apply(q[None], gamma0[row : row + 1], who)[0]
            else:

                def initial(q, row=row):
                    return gamma0[row] * q

            want = _naive_direction(
                g[row], mem.s[row, live], mem.y[row, live], rho0[live, row], initial
            )
            assert torch.allclose(d[row], want, rtol=1e-9, atol=1e-12 * want.abs().max())
            checked.append(len(live))
        return d, gd

    monkeypatch.setattr(lbfgs, "_direction", checking)
    x, y, mask, c = _problem()
    train_heads(x, y, mask, c, HeadConfig(precondition=precondition, dtype="float64"))
    assert len(checked) > 50 and max(checked) == HeadConfig().history  # a full memory too


@pytest.mark.parametrize(
    ("dtype", "atol", "grad_atol"), [("float64", 1e-9, 0), ("mixed", 1e-6, 1e-9)]
)
def test_the_working_set_shrinks_without_changing_any_head(monkeypatch, dtype, atol, grad_atol):
    """Exactly in float64; in ``mixed`` the float32 vector state of fewer heads may round its
    batched products differently (gradients of ~1e-6 from float32 GEMMs: ~1e-10)."""
    x, y, mask, c = _problem(k=40)
    config = HeadConfig(dtype=dtype)
    shrinks = []
    real_select = lbfgs._Pairs.select

    def counting(self, keep):
        shrinks.append(int(keep.numel()))
        real_select(self, keep)

    monkeypatch.setattr(lbfgs._Pairs, "select", counting)
    shrunk = train_heads(x, y, mask, c, config)
    assert len(shrinks) >= 2 and shrinks == sorted(shrinks, reverse=True)
    monkeypatch.setattr(lbfgs, "COMPACT_BELOW", 0.0)  # never shrink
    whole = train_heads(x, y, mask, c, config)
    assert shrinks[-1] < 40 and len(shrinks) == len(set(shrinks))
    np.testing.assert_allclose(shrunk.weights, whole.weights, rtol=0, atol=atol)
    np.testing.assert_allclose(shrunk.bias, whole.bias, rtol=0, atol=atol)
    np.testing.assert_array_equal(shrunk.converged, whole.converged)
    np.testing.assert_array_equal(shrunk.phi_stopped, whole.phi_stopped)
    np.testing.assert_allclose(
        shrunk.final_grad_norm, whole.final_grad_norm, rtol=1e-6, atol=grad_atol
    )
    assert shrunk.n_iter == whole.n_iter


def test_a_float64_switch_after_shrinking_changes_no_head(monkeypatch):
    """``mixed`` switches every head to float64 when one stalls; heads already out of the
    working set get their float64 gradient and phi too, as they would without shrinking."""
    x, y, mask, c = _problem(k=40)
    real = lbfgs._line_search
    state = {"calls": 0, "first_shrunk": None, "at": None, "switched": 0}

    def stalling(prob, theta, f, g, phi, direction, gd, active, c1, heads=None):
        out = list(real(prob, theta, f, g, phi, direction, gd, active, c1, heads))
        if prob.k != 40:  # the start head
            return tuple(out)
        state["calls"] += 1
        if heads is not None and state["first_shrunk"] is None:
            state["first_shrunk"] = state["calls"]
        if state["calls"] == state["at"]:  # one head's search "fails" once: switch to float64
            i = int(active.nonzero()[0])
            out[:4] = (t.clone() for t in out[:4])
            out[0][i], out[1][i], out[2][i], out[3][i] = theta[i], f[i], g[i], phi[i]
            out[4] = out[4].clone()
            out[4][i] = 0.0  # the step taken: none
            state["switched"] += 1
        return tuple(out)

    monkeypatch.setattr(lbfgs, "_line_search", stalling)
    train_heads(x, y, mask, c, HeadConfig())  # where the working set first shrinks
    assert state["first_shrunk"] is not None
    state["at"] = state["first_shrunk"] + 1
    runs = []
    for below in (lbfgs.COMPACT_BELOW, 0.0):  # as shipped, then never shrinking
        monkeypatch.setattr(lbfgs, "COMPACT_BELOW", below)
        state["calls"], state["first_shrunk"] = 0, None
        runs.append((train_heads(x, y, mask, c, HeadConfig()), state["first_shrunk"]))
    (shrunk, shrank_at), (whole, never) = runs
    assert state["switched"] == 2 and shrank_at < state["at"] and never is None
    np.testing.assert_allclose(shrunk.weights, whole.weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(shrunk.final_grad_norm, whole.final_grad_norm, rtol=1e-9)
    np.testing.assert_array_equal(shrunk.phi_stopped, whole.phi_stopped)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_row_reductions_match_naive_loops(dtype):
    g = torch.as_tensor(np.random.default_rng(3).normal(size=(7, 300)), dtype=dtype)
    h = torch.flip(g, dims=(1,))
    g[2, 5] = -40.0  # the largest magnitude is negative
    want_max = [max(abs(float(v)) for v in row) for row in g]
    want_dot = [
        sum(float(a) * float(b) for a, b in zip(r, q, strict=True))
        for r, q in zip(g, h, strict=True)
    ]
    got_max, got_dot = lbfgs.max_abs_rows(g), lbfgs._rowdot(g, h)
    assert got_max.dtype == got_dot.dtype == torch.float64
    np.testing.assert_array_equal(got_max.numpy(), want_max)
    np.testing.assert_allclose(
        got_dot.numpy(), want_dot, rtol=1e-12 if dtype == torch.float64 else 1e-5
    )
    g[4, 9] = float("nan")
    assert torch.isnan(lbfgs.max_abs_rows(g)[4]) and not torch.isnan(lbfgs.max_abs_rows(g)[3])


def test_row_dots_do_not_depend_on_the_thread_count():
    # one long row (a working set of one head; P = 40,000 > the ~32k from which vecdot split a
    # row's sum across threads)
    g = torch.as_tensor(np.random.default_rng(4).normal(size=(1, 40_000)), dtype=torch.float32)
    h = torch.roll(g, 7, dims=1)
    before = torch.get_num_threads()
    try:
        dots = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            dots.append(lbfgs._rowdot(g, h))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(dots[0], dots[1])


def test_a_head_without_data_keeps_a_finite_memory(monkeypatch):
    # its gradient is exactly 0 from the zero start: plain L-BFGS's first step scaled it by
    # 1/|g| clamped at 1e-300, which is 0 in float32 (0/0 = NaN went into the memory)
    x, y, mask, c = _problem(k=6)
    mask[2] = False
    real = lbfgs._Pairs.store
    seen = []

    def checking(self, g_new):
        s, yv = self.next_slot()
        seen.append(bool(torch.isfinite(s).all() and torch.isfinite(yv).all()))
        return real(self, g_new)

    monkeypatch.setattr(lbfgs._Pairs, "store", checking)
    heads = train_heads(x, y, mask, c, HeadConfig(precondition=False, dtype="mixed"))
    assert len(seen) > 10 and all(seen)
    assert np.isfinite(heads.weights).all() and (heads.weights[2] == 0).all()
