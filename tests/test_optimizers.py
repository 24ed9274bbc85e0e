"""The optimisers BBT's config can name: what each one adapts, and what it leaves alone."""
import numpy as np
import pytest

from bbt_mini.methods.bbt import BBTConfig
from bbt_mini.core.optimizers import OPTIMIZERS, make_optimizer


def tilted_ellipsoid(X):
    """An ill-conditioned quadratic whose axes are not the coordinates (so C has something to learn)."""
    d = X.shape[-1]
    R = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))[0]
    return ((np.asarray(X) @ R) ** 2 * 10.0 ** np.linspace(0, 3, d)).sum(-1)


def run(name, generations=60, d=6, seed=1):
    opt = make_optimizer(name, d, 1.0, 10, seed)
    C0, mean0, sigma0 = opt.es.C.copy(), opt.es.mean.copy(), opt.es.sigma
    first = None
    for _ in range(generations):
        X = opt.ask()
        fx = tilted_ellipsoid(X)
        first = fx.min() if first is None else first
        opt.tell(X, fx)
    return opt, C0, mean0, sigma0, first


def test_frozen_cma_keeps_the_identity_covariance_while_mean_and_step_size_adapt():
    opt, C0, mean0, sigma0, first = run("frozen-cma")
    assert np.array_equal(opt.es.C, C0), "the covariance moved"
    assert np.abs(C0 - np.eye(len(C0))).max() < 2e-4  # pycma's start: I up to exp(1e-4 i / d)
    assert np.linalg.norm(opt.es.mean - mean0) > 0.5, "the mean did not move"
    assert opt.es.sigma < 0.5 * sigma0, "the step size did not adapt"
    assert opt.es.best.f < 1e-2 * first, "no progress on the objective"


def test_full_cma_moves_the_covariance_on_the_same_run():
    """The contrast that makes the freezing test mean something: same seed, C is learned."""
    opt, C0, *_ = run("cma")
    assert np.abs(opt.es.C - C0).max() > 0.1


def test_each_name_builds_the_optimizer_it_names_and_others_are_refused():
    """What each name adapts on the same problem and seed: pycma's full covariance (off-diagonal
    entries), sep-CMA-ES's diagonal only, the frozen one nothing, the book's CMAES its own C, and
    random search nothing at all: its candidates are the same whatever it is told."""
    full, sep, frozen = (run(name)[0] for name in ("cma", "sep-cma", "frozen-cma"))
    off = ~np.eye(6, dtype=bool)
    assert np.abs(full.es.C[off]).max() > 0.05 and full.es.opts["CMA_diagonal"] is False
    assert np.ndim(sep.es.C) == 0 and np.shape(sep.es.sigma_vec.scaling) == (6,)  # a diagonal, no matrix
    assert np.ptp(np.log(sep.es.sigma_vec.scaling)) > 0.5  # learned: the coordinates' scales differ
    assert np.abs(frozen.es.C - run("frozen-cma", 0)[1]).max() == 0
    mini = make_optimizer("mini-cma", 6, 1.0, 10, 1)
    for _ in range(60):
        X = mini.ask()
        mini.tell(X, tilted_ellipsoid(X))
    assert np.abs(mini.es.C[off]).max() > 0.05
    a, b = make_optimizer("random", 6, 1.0, 10, 1), make_optimizer("random", 6, 1.0, 10, 1)
    for told in (np.arange(10.0), -np.arange(10.0)):  # told opposite rankings: the same next draws
        Xa, Xb = a.ask(), b.ask()
        np.testing.assert_array_equal(Xa, Xb)
        a.tell(Xa, told)
        b.tell(Xb, -told)
    assert abs(np.std(np.vstack([a.ask() for _ in range(200)])) - 1.0) < 0.05  # N(0, sigma0^2 I), sigma0 = 1
    for name in OPTIMIZERS:
        BBTConfig(optimizer=name).check()
    with pytest.raises(ValueError, match="unknown optimizer"):
        BBTConfig(optimizer="cma-frozen").check()


def test_frozen_cma_continues_exactly_after_a_checkpoint():
    from bbt_mini.core.optimizers import restore

    a, *_ = run("frozen-cma", generations=5)
    b = restore(a.state())
    Xa, Xb = a.ask(), b.ask()
    np.testing.assert_array_equal(Xa, Xb)


def test_bbt_and_bbtv2_at_the_papers_d_adapt_sigma_by_csa_where_pycma_alone_would_pick_tpa():
    """The papers' pycma (2022) adapted sigma by CSA at every d; pycma 4.5 picks TPA from d = 300 on. The full
    and colab profiles (d = 500) build BBT's and BBTv2's optimisers with CSA all the same."""
    import cma

    from bbt_mini.methods.registry import config

    d = 500
    assert d >= cma.evolution_strategy.TPA_dimension
    own = cma.CMAEvolutionStrategy(np.zeros(d), 1.0, {"popsize": 20, "seed": 1, "verbose": -9})
    assert isinstance(own.adapt_sigma, cma.sigma_adaptation.CMAAdaptSigmaTPA)  # what the setting prevents
    for profile in ("colab", "full"):
        for method in ("bbt", "bbtv2"):
            c = config(method, profile)
            assert (c.intrinsic_dim, c.adapt_sigma) == (d, "csa")
            for name in ("cma", "sep-cma", "frozen-cma"):
                opt = make_optimizer(name, c.intrinsic_dim, c.sigma0, c.popsize, 1, c.bound, c.adapt_sigma)
                assert isinstance(opt.es.adapt_sigma, cma.sigma_adaptation.CMAAdaptSigmaCSA), (profile, method, name)
    tpa = make_optimizer("cma", d, 1.0, 20, 1, adapt_sigma="tpa")
    assert isinstance(tpa.es.adapt_sigma, cma.sigma_adaptation.CMAAdaptSigmaTPA)
    with pytest.raises(ValueError, match="pycma rule"):
        BBTConfig(optimizer="mini-cma", adapt_sigma="tpa").check()
    with pytest.raises(ValueError, match="unknown adapt_sigma"):
        BBTConfig(adapt_sigma="median").check()


def test_below_300_dimensions_the_explicit_csa_runs_exactly_as_pycmas_default():
    """The small and ci profiles (d < 300) got CSA from pycma already: naming it changes none of their numbers."""
    import cma

    d = 100
    ours = make_optimizer("cma", d, 1.0, 10, seed=3)
    assert ours.es.opts["AdaptSigma"] is cma.sigma_adaptation.CMAAdaptSigmaCSA  # named, not left to pycma
    plain = cma.CMAEvolutionStrategy(np.zeros(d), 1.0, {"popsize": 10, "seed": 3, "verbose": -9, "tolfun": 0,
                                                        "randn": np.random.RandomState(3).randn})
    assert type(plain.adapt_sigma) is type(ours.es.adapt_sigma)  # pycma's own choice below 300
    for _ in range(5):
        X, Y = ours.ask(), np.array(plain.ask())
        np.testing.assert_array_equal(X, Y)
        ours.tell(X, tilted_ellipsoid(X))
        plain.tell(list(Y), list(tilted_ellipsoid(Y)))
    assert ours.es.sigma == plain.sigma
