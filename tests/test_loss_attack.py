import warnings

import numpy as np
import pytest
from scipy.special import log_softmax

from miascale.attacks import (
    ATTACK_VARIANTS,
    ATTACKS,
    VARIANT_ARGS,
    LiraResult,
    LossResult,
    get_attack,
    lira_scores,
    loss_scores,
    parse_attacks,
    rmia_scores,
)
from miascale.errors import MiascaleError
from miascale.membership import bernoulli_plan
from miascale.signals import cross_entropy_loss, lira_statistic


def _logits(k=4, n=50, c=5, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, n, c)) * scale
    labels = rng.integers(0, c, size=n)
    return logits, labels


@pytest.mark.parametrize("scale", [0.5, 5.0, 60.0])
def test_loss_equals_log_softmax_true_class(scale):
    logits, labels = _logits(scale=scale, seed=int(scale))
    phi = lira_statistic(logits, labels)
    expected = np.take_along_axis(
        log_softmax(logits, axis=-1), np.broadcast_to(labels[None, :, None], (4, 50, 1)), -1
    )[..., 0]
    res = loss_scores(phi)
    assert isinstance(res, LossResult)
    assert res.scores.dtype == np.float64 and res.scores.shape == phi.shape
    np.testing.assert_allclose(res.scores, expected, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(
        res.scores, -cross_entropy_loss(logits, labels), rtol=1e-9, atol=1e-13
    )
    assert (res.n_unscored, res.n_fallback_variance) == (0, 0)
    assert (res.n_models, res.n_examples) == (4, 50)


def test_loss_extreme_phi_is_stable():
    phi = np.array([[-1e4, -40.0, 0.0, 40.0, 1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = loss_scores(phi).scores[0]
    assert s[0] == -1e4 and s[2] == -np.log(2.0) and s[4] == 0.0
    np.testing.assert_allclose(s[1], -40.0 - np.log1p(np.exp(-40.0)), rtol=1e-15)
    np.testing.assert_allclose(s[3], -np.exp(-40.0), rtol=1e-12)  # not rounded to 0


class _Untouchable:
    """Raises on any use, to prove that LOSS never reads the membership mask."""

    def __getattr__(self, name):
        raise AssertionError(f"in_mask was read ({name})")

    def __array__(self, *args, **kwargs):
        raise AssertionError("in_mask was read (__array__)")

    def __len__(self):
        raise AssertionError("in_mask was read (__len__)")


def test_loss_never_reads_in_mask():
    logits, labels = _logits(seed=3)
    phi = lira_statistic(logits, labels)
    base = loss_scores(phi).scores
    mask = bernoulli_plan(50, 4, seed=0).in_mask
    for m in (None, mask, ~mask, _Untouchable()):
        np.testing.assert_array_equal(loss_scores(phi, m).scores, base)
    other = loss_scores(
        phi, _Untouchable(), online=False, population_stats=np.zeros((4, 200)), variance="x"
    )
    np.testing.assert_array_equal(other.scores, base)


def test_loss_validation():
    with pytest.raises(MiascaleError, match="NaN"):
        loss_scores(np.array([[0.0, np.nan]]))
    with pytest.raises(MiascaleError, match="2-D"):
        loss_scores(np.zeros(5))
    with pytest.raises(MiascaleError, match="real"):
        loss_scores(np.array([["a", "b"]]))


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------


def _signals(k=6, n=30, z=150, seed=0):
    rng = np.random.default_rng(seed)
    mask = bernoulli_plan(n, k, seed).in_mask
    stats = rng.normal(size=(k, n)) + mask
    pop = rng.normal(size=(k, z))
    return stats, mask, pop


def test_get_attack():
    assert get_attack("rmia") is rmia_scores
    assert get_attack("loss") is loss_scores
    assert get_attack("lira") is ATTACKS["lira"]  # lira_scores behind a thin adapter
    assert set(ATTACKS) == {"lira", "rmia", "loss"}
    for bad in ("nope", None, "lira-online"):
        with pytest.raises(MiascaleError, match="lira, loss, rmia"):
            get_attack(bad)


@pytest.mark.parametrize("variant", ATTACK_VARIANTS)
def test_every_variant_runs_with_the_uniform_convention(variant):
    stats, mask, pop = _signals()
    attack, kwargs = VARIANT_ARGS[variant]
    res = get_attack(attack)(stats, mask, population_stats=pop, **kwargs)
    assert res.scores.shape == stats.shape and res.scores.dtype == np.float64
    assert isinstance(res.n_unscored, int) and isinstance(res.n_fallback_variance, int)
    assert res.n_unscored == int(np.isnan(res.scores).sum())
    # the defaults of the convention: online=True, population_stats=None where not needed
    if attack != "rmia":
        get_attack(attack)(stats, mask)


def test_lira_adapter_ignores_population_and_passes_options():
    stats, mask, pop = _signals(seed=1)
    kw = {"online": False, "variance": "global", "location": "median"}
    via = get_attack("lira")(stats, mask, population_stats=pop, **kw)
    direct = lira_scores(stats, mask, **kw)
    np.testing.assert_array_equal(via.scores, direct.scores)
    assert isinstance(via, LiraResult)
    assert (via.online, via.variance, via.location) == (False, "global", "median")
    assert (via.n_unscored, via.n_fallback_variance) == (
        direct.n_unscored,
        direct.n_fallback_variance,
    )
    with pytest.raises(TypeError):
        get_attack("lira")(stats, mask, gamma=2.0)  # options are the attack's own


def test_rmia_options_via_registry():
    stats, mask, pop = _signals(seed=2)
    res = get_attack("rmia")(stats, mask, online=False, population_stats=pop, a=0.4, gamma=2.0)
    direct = rmia_scores(stats, mask, pop, online=False, a=0.4, gamma=2.0)
    np.testing.assert_array_equal(res.scores, direct.scores)


def test_variants():
    assert ATTACK_VARIANTS == ("lira-online", "lira-offline", "rmia-online", "rmia-offline", "loss")
    assert set(VARIANT_ARGS) == set(ATTACK_VARIANTS)
    for name, (attack, kwargs) in VARIANT_ARGS.items():
        assert attack in ATTACKS
        if attack != "loss":
            assert kwargs["online"] == name.endswith("-online")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lira", ("lira-online",)),
        ("rmia", ("rmia-online",)),
        ("loss", ("loss",)),
        ("all", ATTACK_VARIANTS),
        ("lira-offline", ("lira-offline",)),
        ("loss,lira,lira-online", ("loss", "lira-online")),
        (" RMIA-offline , LiRA ,", ("rmia-offline", "lira-online")),
        (
            "rmia-offline,all",
            ("rmia-offline", "lira-online", "lira-offline", "rmia-online", "loss"),
        ),
        (["rmia-offline", "lira,loss", "rmia-offline"], ("rmia-offline", "lira-online", "loss")),
        (("all",), ATTACK_VARIANTS),
    ],
)
def test_parse_attacks(text, expected):
    assert parse_attacks(text) == expected


def test_parse_attacks_errors():
    with pytest.raises(MiascaleError, match=r"'lira-median'.*lira-online, lira-offline.*all"):
        parse_attacks("rmia,lira-median")
    with pytest.raises(MiascaleError, match="loss"):
        parse_attacks(["lira", "loss-online"])
    for empty in ("", " , ", []):
        with pytest.raises(MiascaleError, match="No attack"):
            parse_attacks(empty)
    with pytest.raises(MiascaleError, match="strings"):
        parse_attacks(["lira", 3])
    with pytest.raises(MiascaleError, match="comma-separated"):
        parse_attacks(3)
