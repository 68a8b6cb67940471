import numpy as np
import pytest

from miascale.errors import MiascaleError
from miascale.pool import Pool, draw_pool


def _labels(counts):
    rng = np.random.default_rng(123)
    y = np.repeat(np.arange(len(counts)), counts)
    return rng.permutation(y)


def test_counts_and_no_duplicates():
    y = _labels([30, 25, 40, 22, 31])
    pool = draw_pool(y, shots=5, seed=7)
    assert isinstance(pool, Pool)
    assert pool.size == 2 * 5 * 5 and pool.n_classes == 5
    assert pool.indices.dtype == np.int64 and pool.labels.dtype == np.int64
    assert len(np.unique(pool.indices)) == pool.size
    np.testing.assert_array_equal(np.bincount(pool.labels), np.full(5, 10))
    # remapped labels agree with the original labels at the drawn positions
    np.testing.assert_array_equal(pool.classes[pool.labels], y[pool.indices])


def test_class_subset_and_reproducibility():
    y = _labels([10] * 8)
    a = draw_pool(y, shots=3, n_classes=4, seed=1)
    b = draw_pool(y, shots=3, n_classes=4, seed=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.classes, b.classes)
    assert a.n_classes == 4 and np.all(np.diff(a.classes) > 0)
    assert set(y[a.indices]) == set(a.classes.tolist())
    others = [draw_pool(y, shots=3, n_classes=4, seed=s).indices for s in range(2, 6)]
    assert any(not np.array_equal(a.indices, o) for o in others)


def test_draw_is_spread_over_class():
    # every example of a class is drawn sometimes across seeds (not always the first ones)
    y = _labels([6, 6])
    hits = np.zeros(12, int)
    for s in range(40):
        hits[draw_pool(y, shots=1, seed=s).indices] += 1
    assert np.all(hits > 0)


def test_too_small_class_message():
    y = _labels([20, 7, 20])
    with pytest.raises(MiascaleError) as e:
        draw_pool(y, shots=5, class_names=["cat", "dog", "bird"])
    msg = str(e.value)
    assert "dog" in msg and "7" in msg and "shots <= 3" in msg
    with pytest.raises(MiascaleError, match="id 1"):
        draw_pool(y, shots=5)


@pytest.mark.parametrize(
    "kwargs",
    [{"shots": 0}, {"shots": 2, "n_classes": 1}, {"shots": 2, "n_classes": 4}],
)
def test_bad_arguments(kwargs):
    with pytest.raises(MiascaleError):
        draw_pool(_labels([10, 10, 10]), **kwargs)


def test_n_classes_error_says_how_many():
    with pytest.raises(MiascaleError, match="3"):
        draw_pool(_labels([10, 10, 10]), shots=2, n_classes=9)


def test_relabel_matches_a_lookup_table():
    y = np.repeat(np.arange(7), 6)
    pool = draw_pool(y, 2, 4, seed=3)
    lookup = {int(c): i for i, c in enumerate(pool.classes)}
    probe = np.array([0, 1, 2, 3, 4, 5, 6, 6, 0])
    expected = [lookup.get(int(c), -1) for c in probe]
    np.testing.assert_array_equal(pool.relabel(probe), expected)
    np.testing.assert_array_equal(pool.relabel(y[pool.indices]), pool.labels)
