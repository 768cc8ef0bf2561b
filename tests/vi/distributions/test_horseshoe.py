import math

import numpy as np
import pytest
import torch

from torch_blue.vi.distributions import HorseshoePrior, MeanFieldNormal, has_closed_form_kl
from torch_blue.vi.distributions.horseshoe import log_scaled_exp1
from torch_blue.vi.utils import norm_constants

integrate = pytest.importorskip("scipy.integrate")
special = pytest.importorskip("scipy.special")

K = 1 / math.sqrt(2 * math.pi**3)


def _scale_mixture_density(w, tau):
    """p(w) = int_0^inf N(w; 0, tau^2 lambda^2) 2 / (pi (1 + lambda^2)) d lambda."""

    def integrand(lam):
        sd = tau * lam
        normal = math.exp(-0.5 * (w / sd) ** 2) / (math.sqrt(2 * math.pi) * sd)
        return normal * 2 / (math.pi * (1 + lam**2))

    # Split where the Normal factor switches on, so quad sees both scales.
    edge = abs(w) / tau
    parts = [(0, edge), (edge, max(10 * edge, 1.0)), (max(10 * edge, 1.0), math.inf)]
    return sum(
        integrate.quad(integrand, a, b, limit=200, epsrel=1e-12)[0] for a, b in parts
    )


@pytest.mark.parametrize("tau", [1.0, 0.1])
@pytest.mark.parametrize("x", [1e-3, 0.2, 1.0, math.sqrt(2), 3.0, 20.0])
def test_log_prob_matches_numerical_integration_over_the_local_scale(x, tau):
    w = x * tau
    prior = HorseshoePrior(scale=tau)
    actual = prior.prior_log_prob(torch.tensor([w, -w], dtype=torch.float64))
    expected = math.log(_scale_mixture_density(w, tau))
    torch.testing.assert_close(actual, torch.full((2,), expected, dtype=torch.float64))


@pytest.mark.parametrize("x", [1e-4, 0.01, 0.5, 2.0, 50.0])
def test_density_respects_the_bounds_of_carvalho_et_al(x):
    density = HorseshoePrior().prior_log_prob(torch.tensor([x], dtype=torch.float64)).exp()
    assert K / 2 * math.log1p(4 / x**2) < density.item() < K * math.log1p(2 / x**2)


def test_density_integrates_to_one():
    prior = HorseshoePrior(scale=0.5)

    def density(w):
        return prior.prior_log_prob(torch.tensor([w], dtype=torch.float64)).exp().item()

    # Split at the log spike at 0 and integrate the 1/w^2 tail to infinity.
    total = 2 * sum(
        integrate.quad(density, a, b, limit=200)[0]
        for a, b in [(0, 1e-3), (1e-3, 1), (1, 100), (100, math.inf)]
    )
    assert total == pytest.approx(1.0, abs=1e-6)


def test_log_scaled_exp1_matches_scipy():
    z = torch.logspace(-12, 2.8, 2000, dtype=torch.float64)
    expected = np.log(special.exp1(z.numpy())) + z.numpy()
    np.testing.assert_allclose(log_scaled_exp1(z).numpy(), expected, rtol=0, atol=1e-9)
    float32 = log_scaled_exp1(z.float()).double().numpy()
    np.testing.assert_allclose(float32, expected, rtol=0, atol=2e-6)


def test_log_scaled_exp1_tends_to_minus_log_z():
    z = torch.tensor([1e4, 1e8, 1e30])
    torch.testing.assert_close(log_scaled_exp1(z), -torch.log(z), rtol=1e-4, atol=1e-4)


def test_extreme_weights_give_finite_values_and_gradients():
    w = torch.tensor([1e-30, -1e-20, 1e-8, 1e8, -1e15], requires_grad=True)
    value = HorseshoePrior(scale=0.1).prior_log_prob(w)
    value.sum().backward()
    assert torch.isfinite(value).all()
    assert torch.isfinite(w.grad).all()


def test_log_prob_gradcheck_across_the_branch_switch():
    # z = w^2 / (2 tau^2) = 1 at w = sqrt(2) tau, where the evaluation changes branch.
    w = torch.tensor(
        [0.05, -0.7, 1.4, 1.414, 1.415, -3.0, 12.0], dtype=torch.float64, requires_grad=True
    )
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    prior = HorseshoePrior()
    assert torch.autograd.gradcheck(lambda x, s: prior.log_prob(x, (s,)), (w, scale))


def test_norm_constants_drop_log_k():
    prior = HorseshoePrior(scale=0.3)
    sample = torch.randn(10, dtype=torch.float64)
    with_constants = prior.prior_log_prob(sample)
    with norm_constants(False):
        without = prior.prior_log_prob(sample)
    torch.testing.assert_close(without, with_constants - math.log(K))


def test_kaiming_rescale_scales_the_global_scale():
    prior = HorseshoePrior(scale=2.0)
    prior.kaiming_rescale(3)
    assert float(prior.scale) == pytest.approx(2 / 3)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan])
def test_invalid_scale_raises(scale):
    with pytest.raises(
        ValueError, match=r"HorseshoePrior: scale must be positive and finite"
    ):
        HorseshoePrior(scale=scale)


def test_no_closed_form_kl():
    assert not has_closed_form_kl(HorseshoePrior(), MeanFieldNormal())
