"""The projection p = A z + p0, the samplers for A (chapter 5's derivation, checked) and the
starting points p0 (chapter 2's experiment), on the tiny random masked LM."""
import math

import numpy as np
import pytest
import torch
from tiny import TINY, tiny_folder, tiny_lm, tiny_setup

from bbt_mini.core.projection import (
    RANDOM_P0_LOW,
    Projection,
    build_p0,
    check_p0,
    make_A,
    normal_std,
    normal_v1,
    p0_token_ids,
    phrase_token_ids,
    random_token_ids,
    uniform_A,
)
from bbt_mini.methods.bbt import BBTConfig, projection_for
from bbt_mini.run.runs import pretrained_p0
from bbt_mini.service.blackbox import model_behind


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_lm(tiny_folder(tmp_path_factory))


@pytest.fixture()
def service(lm):
    return tiny_setup(lm).service


def test_projection_maps_z_to_prompts_around_p0():
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4)).astype(np.float32)
    proj = Projection(uniform_A(12, 5, rng), p0)
    np.testing.assert_allclose(proj(np.zeros(5))[0], p0)
    z = rng.standard_normal((2, 5))
    np.testing.assert_allclose(proj(z)[1], (proj.A @ z[1]).reshape(3, 4) + p0, rtol=1e-5)
    with pytest.raises(ValueError, match="z must have 5 entries"):
        proj(np.zeros(6))


def test_uniform_sampler_matches_nn_linear_default_init():
    A = uniform_A(2000, 100, np.random.default_rng(1))
    assert np.abs(A).max() <= 1 / math.sqrt(100)
    assert abs(A.std() - 1 / math.sqrt(3 * 100)) < 1e-3  # std of U(-b, b) is b / sqrt(3)


@pytest.mark.parametrize("d,sigma0,alpha,sigma_hat", [(50, 1.0, 1.0, 0.13), (500, 0.2, 0.2, 2.0)])
def test_normal_sampler_gives_Az_the_target_std(d, sigma0, alpha, sigma_hat):
    """With z ~ N(0, sigma0^2 I) and A_ij ~ N(0, s^2): Var[(Az)_i] = d s^2 sigma0^2 = (alpha sigma_hat)^2."""
    rng = np.random.default_rng(2)
    A = make_A("normal", 4000, d, rng, sigma_hat=sigma_hat, sigma0=sigma0, alpha=alpha)
    assert abs(A.std() / normal_std(sigma_hat, d, sigma0, alpha) - 1) < 0.01
    Az = A @ (sigma0 * rng.standard_normal((d, 200)))
    assert abs(Az.mean()) < 0.02 * alpha * sigma_hat
    assert abs(Az.std() / (alpha * sigma_hat) - 1) < 0.03


def test_v1_sampler_formulas():
    mu, sigma = normal_v1(0.01, 0.5, 100)
    assert math.isclose(mu, 0.01 / (100 - 0.25)) and math.isclose(sigma, 0.5 / math.sqrt(100 - 0.25))
    with pytest.raises(ValueError, match="needs d > sigma_hat"):
        normal_v1(0.0, 20.0, 100)
    with pytest.raises(ValueError, match="needs sigma_hat"):
        make_A("normal", 10, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown sampler"):
        make_A("laplace", 10, 5, np.random.default_rng(0), sigma_hat=1.0)


def test_uniform_matched_sampler_has_the_normal_samplers_std_and_a_uniform_shape():
    rng = np.random.default_rng(3)
    A = make_A("uniform-matched", 3000, 50, rng, sigma_hat=0.14, sigma0=1.0)
    target = normal_std(0.14, 50, 1.0)
    assert abs(A.std() / target - 1) < 0.01
    assert np.abs(A).max() <= math.sqrt(3) * target  # bounded: a uniform, not a normal
    assert np.mean(np.abs(A) > 1.8 * target) == 0  # a normal puts 7 % of entries there


def test_random_token_p0_is_fixed_per_seed_differs_across_seeds_and_stays_in_the_published_vocabulary(service):
    published = model_behind(service).model.config.vocab_size  # the model's config, not the tokenizer
    L = 7
    ids1, ids1b, ids2 = (p0_token_ids("random-tokens", service, L, seed=s) for s in (1, 1, 2))
    assert ids1 == ids1b and ids1 != ids2
    assert len(set(ids1)) == L and all(RANDOM_P0_LOW <= i < published for i in ids1 + ids2)
    p0 = build_p0("random-tokens", service, L, seed=1)
    assert p0.shape == (L, service.hidden_size) and p0.dtype == np.float32
    np.testing.assert_array_equal(p0, service.token_embeddings(ids1))
    np.testing.assert_array_equal(p0, build_p0("random-tokens", service, L, seed=1))
    assert not np.array_equal(p0, build_p0("random-tokens", service, L, seed=2))
    with pytest.raises(ValueError, match="only 1100 tokens"):
        random_token_ids(published - RANDOM_P0_LOW + 1, published, seed=1)
    with pytest.raises(ValueError, match="needs the run's seed"):
        build_p0("random-tokens", service, L)


def test_words_p0_repeats_the_phrase_then_cuts_it_to_L(service):
    assert phrase_token_ids([5, 6, 7], 7) == [5, 6, 7, 5, 6, 7, 5]
    assert phrase_token_ids([5, 6, 7], 2) == [5, 6]
    ids = service.token_ids("this movie was great")
    assert len(ids) == 4 and len(set(ids)) == 4  # all in the tiny vocabulary
    p0 = build_p0("words:this movie was great", service, 6)
    assert p0.shape == (6, service.hidden_size)
    np.testing.assert_array_equal(p0, service.token_embeddings(ids + ids[:2]))
    with pytest.raises(ValueError, match="at least one token"):
        phrase_token_ids([], 3)


def test_p0_forms_are_checked_before_a_model_loads():
    for good in ("tokens", "zeros", "random-tokens", "words:a movie", "file:/x.npy"):
        check_p0(good)
    for bad, match in (("ones", "unknown p0"), ("words:", "needs a text"), ("file:", "needs a text or a path")):
        with pytest.raises(ValueError, match=match):
            check_p0(bad)
    with pytest.raises(ValueError, match="unknown p0"):
        BBTConfig(**{**TINY, "p0": "random"}).check()


def test_file_p0_is_the_saved_prompt_and_a_wrong_shape_is_refused(service, tmp_path):
    H = service.hidden_size
    saved = np.random.default_rng(4).standard_normal((TINY["prompt_length"], H)).astype(np.float32)
    np.save(tmp_path / "p.npy", saved)
    proj = projection_for(service, BBTConfig(**{**TINY, "p0": f"file:{tmp_path / 'p.npy'}"}), seed=1)
    np.testing.assert_array_equal(proj.p0, saved)
    np.testing.assert_array_equal(proj(np.zeros(TINY["intrinsic_dim"]))[0], saved)  # z = 0 gives p0
    with pytest.raises(ValueError, match=r"holds a \(2, 32\) prompt; this run needs \(3, 32\)"):
        build_p0(f"file:{tmp_path / 'p.npy'}", service, 3)


def test_pretrained_p0_tunes_once_then_reads_the_prompt_back(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path_factory.mktemp("cache")))
    folder = str(tiny_folder(tmp_path_factory))
    spec, first = pretrained_p0("imdb", folder, "ci", steps=2, progress=False, k=1, test_size=4)
    again, second = pretrained_p0("imdb", folder, "ci", steps=2, progress=False, k=1, test_size=4)
    assert spec == again and spec.startswith("file:")
    assert first["cached"] is False and second["cached"] is True and second["steps"] == 2
    prompt = np.load(spec[len("file:"):])
    assert prompt.shape == (4, 32)  # the ci profile's L, the tiny model's hidden size
    start = tiny_lm(folder).embed(torch.arange(1000, 1004)).detach().numpy()
    assert not np.allclose(prompt, start)  # the gradient steps moved it off its start


def test_bbt_normal_sampler_has_std_one_over_d_needs_no_statistics_and_is_normal():
    """BBT's own normal option: entries N(0, (1/d)^2), so (A z)_i has std sigma0 / sqrt(d) for z ~ N(0, sigma0^2 I)."""
    rng = np.random.default_rng(4)
    d = 400
    A = make_A("normal-bbt", 3000, d, rng)  # no sigma_hat: it ignores the model
    assert abs(A.std() * d - 1) < 0.01 and abs(A.mean()) < 0.01 / d
    assert abs(np.mean(np.abs(A) > 1.8 / d) - 0.072) < 0.005  # a normal's tail, not a uniform's (0 there)
    Az = A @ rng.standard_normal((d, 200))
    assert abs(Az.std() * math.sqrt(d) - 1) < 0.03
    uniform = make_A("uniform", 3000, d, rng)
    assert abs(uniform.std() / A.std() - math.sqrt(d / 3)) < 0.1  # sqrt(d / 3) times smaller than BBT's uniform
    np.testing.assert_array_equal(make_A("normal-bbt", 50, 10, np.random.default_rng(5)),
                                  make_A("normal-bbt", 50, 10, np.random.default_rng(5)))
