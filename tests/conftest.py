import os

import pytest

# never touch the user's cache or the network from tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIASCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MIASCALE_FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("MIASCALE_WORDNET_DIR", raising=False)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory):
    """scikit-learn's digits as a feature file (64 pixel values), for the identity backbone."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    p = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(p, features=d.data.astype(np.float32), labels=d.target)
    return p


def _stored(run):
    import json

    from miascale.experiments import ResultStore

    with ResultStore.load(run) as store:
        rows = sorted(store.rows(), key=lambda r: json.dumps(r, sort_keys=True, default=str))
        return rows, {c["cell_id"]: c["artifacts"] for c in store.cells()}


@pytest.fixture
def assert_same_runs():
    """``check(run_a, run_b)``: the two run directories hold the same rows (in any order), the
    same artifact folders and the same arrays in every ``signals.npz``; returns run_a's
    (rows, {cell_id: artifacts})."""
    import numpy as np

    def check(run_a, run_b):
        (rows_a, art_a), (rows_b, art_b) = _stored(run_a), _stored(run_b)
        assert rows_b == rows_a and art_b == art_a
        for rel in art_a.values():
            with (
                np.load(run_a / rel / "signals.npz") as a,
                np.load(run_b / rel / "signals.npz") as b,
            ):
                assert set(a.files) == set(b.files)
                for k in a.files:
                    np.testing.assert_array_equal(a[k], b[k])
        return rows_a, art_a

    return check
