"""Few-shot linear probe: how good are the features for the downstream task?

S examples per class are drawn from the training split (seeded), standardised with their own
mean/std, and a multinomial logistic regression (scikit-learn, L2, C=1) is fit; accuracy is measured
on the whole test split. Reported as mean ± std over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miascale.errors import MiascaleError


@dataclass(frozen=True)
class ProbeResult:
    shots: int
    accuracy_mean: float
    accuracy_std: float
    seeds: tuple[int, ...]

    def to_dict(self) -> dict:
        return {
            "shots": self.shots,
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "seeds": list(self.seeds),
        }


def sample_shots(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``shots`` random examples of every class (without replacement)."""
    counts = np.bincount(labels)
    if shots < 1:
        raise MiascaleError(f"shots must be a positive integer, got {shots}.")
    if counts.min() < shots:
        c = int(np.argmin(counts))
        raise MiascaleError(
            f"Class {c} has only {int(counts[c])} training examples; cannot draw {shots} shots. "
            f"The largest feasible number is {int(counts.min())}."
        )
    # a random key per example, then the `shots` smallest keys within each class
    order = np.lexsort((rng.random(len(labels)), labels))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order[(starts[:, None] + np.arange(shots)[None, :]).ravel()]


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    shots: int,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> ProbeResult:
    from sklearn.linear_model import LogisticRegression

    accs = []
    for seed in seeds:
        idx = sample_shots(y_train, shots, np.random.default_rng(seed))
        xs = x_train[idx].astype(np.float64)
        mu, sd = xs.mean(0), xs.std(0)
        sd[sd < 1e-8] = 1.0
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit((xs - mu) / sd, y_train[idx])
        accs.append(float((clf.predict((x_test - mu) / sd) == y_test).mean()))
    return ProbeResult(shots, float(np.mean(accs)), float(np.std(accs)), tuple(seeds))
