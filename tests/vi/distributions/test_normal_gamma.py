import math
import warnings

import numpy as np
import pytest
import torch
from torch import distributions as td

from torch_blue.vi.distributions import (
    KnownMeanNormalGammaPrior,
    MeanFieldNormal,
    NormalGammaPrior,
    has_closed_form_kl,
)
from torch_blue.vi.utils import norm_constants

integrate = pytest.importorskip("scipy.integrate")
stats = pytest.importorskip("scipy.stats")

WEIGHTS = [0.3, -1.2, 0.8, 0.05, 2.1]


def _log_integral(log_integrand, lower, upper, shift):
    """log of the integral of exp(log_integrand) over (lower, upper), stably."""
    integrand = lambda x: math.exp(log_integrand(x) - shift)  # noqa: E731
    value, _ = integrate.quad(integrand, lower, upper, limit=200, epsabs=0, epsrel=1e-10)
    return math.log(value) + shift


def _log_integral_2d(log_integrand, mu, log_tau):
    """log of the integral over (mu, tau) on a fine grid, tau = exp(log_tau).

    The trapezoidal rule converges exponentially fast for smooth integrands that vanish
    at the ends of the grid.
    """
    m, s = np.meshgrid(mu, log_tau, indexing="ij")
    values = log_integrand(m, np.exp(s)) + s  # d tau = tau d log_tau
    peak = values.max()
    total = np.trapezoid(np.trapezoid(np.exp(values - peak), log_tau, axis=1), mu)
    return math.log(total) + peak


# ---------------------------------------------------------------- known mean
@pytest.mark.parametrize(("loc", "alpha", "beta"), [(0.0, 1.0, 1.0), (0.5, 3.0, 0.2)])
def test_known_mean_joint_matches_integral_over_the_precision(loc, alpha, beta):
    w = torch.tensor(WEIGHTS, dtype=torch.float64)

    def log_integrand(tau):
        likelihood = stats.norm.logpdf(WEIGHTS, loc, 1 / math.sqrt(tau)).sum()
        return likelihood + stats.gamma.logpdf(tau, alpha, scale=1 / beta)

    prior = KnownMeanNormalGammaPrior(loc, alpha, beta)
    closed = prior.prior_log_prob_sum(w).item()
    expected = _log_integral(log_integrand, 0, math.inf, shift=closed)
    assert closed == pytest.approx(expected, abs=1e-7)


def test_known_mean_single_weight_is_a_student_t():
    prior = KnownMeanNormalGammaPrior(loc=0.3, alpha=2.5, beta=0.7)
    w = torch.randn(1, dtype=torch.float64)
    expected = td.StudentT(5.0, 0.3, math.sqrt(0.7 / 2.5)).log_prob(w)
    torch.testing.assert_close(prior.prior_log_prob_sum(w), expected.sum())
    torch.testing.assert_close(prior.prior_log_prob(w), expected)


# ---------------------------------------------------------------- unknown mean
@pytest.mark.parametrize(
    ("loc", "kappa", "alpha", "beta"), [(0.0, 1.0, 1.0, 1.0), (0.4, 3.0, 2.0, 0.5)]
)
def test_joint_matches_integral_over_mean_and_precision(loc, kappa, alpha, beta):
    weights = WEIGHTS[:3]
    w = torch.tensor(weights, dtype=torch.float64)

    def log_integrand(mu, tau):
        x = np.asarray(weights)[:, None, None]
        likelihood = (0.5 * np.log(tau / (2 * np.pi)) - 0.5 * tau * (x - mu) ** 2).sum(0)
        mean_prior = (
            0.5 * np.log(kappa * tau / (2 * np.pi)) - 0.5 * kappa * tau * (mu - loc) ** 2
        )
        gamma = alpha * math.log(beta) - math.lgamma(alpha) + (alpha - 1) * np.log(tau)
        return likelihood + mean_prior + gamma - beta * tau

    prior = NormalGammaPrior(loc, kappa, alpha, beta)
    closed = prior.prior_log_prob_sum(w).item()
    expected = _log_integral_2d(
        log_integrand, np.linspace(-40, 40, 2001), np.linspace(-14, 7, 1201)
    )
    assert closed == pytest.approx(expected, abs=1e-6)


def test_single_weight_is_a_student_t():
    loc, kappa, alpha, beta = 0.3, 2.0, 2.5, 0.7
    prior = NormalGammaPrior(loc, kappa, alpha, beta)
    w = torch.randn(1, dtype=torch.float64)
    scale = math.sqrt(beta * (kappa + 1) / (alpha * kappa))
    expected = td.StudentT(2 * alpha, loc, scale).log_prob(w)
    torch.testing.assert_close(prior.prior_log_prob_sum(w), expected.sum())
    torch.testing.assert_close(prior.prior_log_prob(w), expected)


# ---------------------------------------------------------------- both
PRIORS = [
    KnownMeanNormalGammaPrior(loc=0.1, alpha=2.0, beta=0.5),
    NormalGammaPrior(loc=0.1, kappa=2.0, alpha=2.0, beta=0.5),
]


@pytest.mark.parametrize("prior", PRIORS, ids=type)
@pytest.mark.parametrize("constants", [True, False])
def test_chain_rule_terms_sum_to_the_joint(prior, constants):
    w = 0.2 * torch.randn(40, 30, dtype=torch.float64) + 0.05
    with norm_constants(constants):
        torch.testing.assert_close(
            prior.prior_log_prob(w).sum(), prior.prior_log_prob_sum(w)
        )
    assert prior.prior_log_prob(w).shape == w.shape


@pytest.mark.parametrize("prior", PRIORS, ids=type)
def test_float32_chain_rule_stays_close_to_the_joint(prior):
    w = 0.1 * torch.randn(100, 64)
    joint = prior.prior_log_prob_sum(w.double()).item()
    assert prior.prior_log_prob(w).double().sum().item() == pytest.approx(joint, rel=1e-5)
    assert prior.prior_log_prob_sum(w).item() == pytest.approx(joint, rel=1e-6)


@pytest.mark.parametrize("prior", PRIORS, ids=type)
def test_norm_constants_drop_n_half_log_2pi(prior):
    w = torch.randn(4, 5, dtype=torch.float64)
    with_constants = prior.prior_log_prob_sum(w)
    with norm_constants(False):
        without = prior.prior_log_prob_sum(w)
    torch.testing.assert_close(without, with_constants + 10 * math.log(2 * math.pi))


@pytest.mark.parametrize("prior", PRIORS, ids=type)
def test_log_prob_and_joint_gradcheck(prior):
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    hyper = tuple(p.to(torch.float64).requires_grad_() for p in prior.get_parameters())
    assert torch.autograd.gradcheck(lambda x, *h: prior.log_prob(x, h), (w, *hyper))
    assert torch.autograd.gradcheck(prior.prior_log_prob_sum, (w,))


@pytest.mark.parametrize("prior", PRIORS, ids=type)
def test_weights_are_exchangeable(prior):
    # The joint depends on the weights only through their sums, so neither it nor the
    # total of the chain-rule terms depends on the flattening order.
    w = torch.randn(50, dtype=torch.float64)
    permuted = w[torch.randperm(50)]
    torch.testing.assert_close(
        prior.prior_log_prob_sum(permuted), prior.prior_log_prob_sum(w)
    )
    torch.testing.assert_close(
        prior.prior_log_prob(permuted).sum(), prior.prior_log_prob(w).sum()
    )


def test_prior_adapts_to_the_scale_of_the_layer():
    # Unlike a fixed Normal, the hierarchical prior accepts whatever scale the weights of a
    # tensor share: once sum w^2 >> beta, its log-density falls only like
    # -(n + 2 alpha) log(scale) instead of -sum w^2 / 2.
    prior, fixed = KnownMeanNormalGammaPrior(), MeanFieldNormal()
    w = torch.randn(1000, dtype=torch.float64)
    small, large = w, 100 * w
    gap = (prior.prior_log_prob_sum(small) - prior.prior_log_prob_sum(large)).item()
    assert gap == pytest.approx((1000 + 2) * math.log(100.0), rel=0.01)
    fixed_gap = fixed.prior_log_prob_sum(small) - fixed.prior_log_prob_sum(large)
    assert fixed_gap > 10 * gap


@pytest.mark.parametrize(
    "prior",
    [
        NormalGammaPrior(loc=1.0, kappa=2.0, alpha=3.0, beta=4.0),
        KnownMeanNormalGammaPrior(loc=1.0, alpha=3.0, beta=4.0),
    ],
    ids=type,
)
def test_kaiming_rescale_scales_loc_and_the_rate(prior):
    prior.kaiming_rescale(12)  # factor c = 1/6
    assert float(prior.loc) == pytest.approx(1 / 6)
    assert float(prior.beta) == pytest.approx(4 / 36)
    assert float(prior.alpha) == 3.0
    if isinstance(prior, NormalGammaPrior):
        assert float(prior.kappa) == 2.0
    with pytest.warns(UserWarning, match="rescaled already"):
        prior.kaiming_rescale(12)
    assert float(prior.beta) == pytest.approx(4 / 36)


def test_rescaled_prior_is_the_density_of_scaled_weights():
    # Scaling the weights by c and the prior by c leaves the density invariant up to
    # the Jacobian: log p_c(c w) = log p(w) - n log c.
    prior, rescaled = NormalGammaPrior(loc=0.3), NormalGammaPrior(loc=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rescaled.kaiming_rescale(12)
    w = torch.randn(20, dtype=torch.float64)
    c = 1 / 6
    torch.testing.assert_close(
        rescaled.prior_log_prob_sum(c * w),
        prior.prior_log_prob_sum(w) - 20 * math.log(c),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (NormalGammaPrior, {"kappa": 0.0}, r"NormalGammaPrior: kappa must be positive"),
        (NormalGammaPrior, {"alpha": -1.0}, r"NormalGammaPrior: alpha must be positive"),
        (NormalGammaPrior, {"beta": 0.0}, r"beta must be positive and finite, got 0.0"),
        (NormalGammaPrior, {"loc": math.nan}, r"NormalGammaPrior: loc must be finite"),
        (KnownMeanNormalGammaPrior, {"alpha": 0.0}, r"KnownMeanNormalGammaPrior: alpha"),
        (KnownMeanNormalGammaPrior, {"beta": -2.0}, r"beta must be positive and finite"),
    ],
)
def test_invalid_hyperparameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("prior", PRIORS, ids=type)
def test_no_closed_form_kl(prior):
    assert not has_closed_form_kl(prior, MeanFieldNormal())
