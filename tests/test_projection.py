"""The projection p = A z + p0 and the samplers for A (chapter 5's derivation, checked)."""
import math

import numpy as np
import pytest

from bbt_mini.projection import Projection, make_A, normal_std, normal_v1, uniform_A


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
