import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi.distributions import MeanFieldStudentT, StudentT
from torch_blue.vi.utils import norm_constants, use_norm_constants

N_DRAWS = 200_000


def _params(mean, scale, n=N_DRAWS):
    return torch.full((n,), mean), torch.full((n,), math.log(scale))


def test_student_t_is_alias():
    assert StudentT is MeanFieldStudentT


# ---------------------------------------------------------------- log_prob
@pytest.mark.parametrize("nu", [0.5, 1.0, 3.0, 4.0, 30.0])
def test_log_prob_matches_torch(nu):
    sample = torch.randn(6, 4) * 4
    mean = torch.randn(6, 4)
    log_scale = 0.5 * torch.randn(6, 4)
    expected = td.StudentT(nu, mean, log_scale.exp()).log_prob(sample)
    actual = MeanFieldStudentT(degrees_of_freedom=nu).log_prob(sample, (mean, log_scale))
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("nu", [1.0, 4.0, 30.0])
@pytest.mark.parametrize("switch", ["global", "context"])
def test_log_prob_without_constants_is_shifted(nu, switch):
    sample, mean, log_scale = torch.randn(3, 10)
    dist = MeanFieldStudentT(degrees_of_freedom=nu)
    with_constants = dist.log_prob(sample, (mean, log_scale))
    if switch == "global":
        use_norm_constants(False)
        without = dist.log_prob(sample, (mean, log_scale))
    else:
        with norm_constants(False):
            without = dist.log_prob(sample, (mean, log_scale))
    constant = (
        math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    )
    torch.testing.assert_close(without, with_constants - constant)


def test_log_prob_gradcheck():
    sample, mean, log_scale = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    dist = MeanFieldStudentT(degrees_of_freedom=3.0)
    assert torch.autograd.gradcheck(
        lambda x, m, s: dist.log_prob(x, (m, s)), (sample, mean, log_scale)
    )


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize(("mean", "scale"), [(0.0, 1.0), (2.0, 0.5)])
def test_sample_mean_and_variance(mean, scale):
    # nu = 10: Var = nu / (nu - 2) * scale^2, excess kurtosis 6 / (nu - 4) = 1, so
    # E[(X - mu)^4] = 4 Var^2 and SE(sample variance) = Var * sqrt(3 / n).
    nu = 10.0
    draws = MeanFieldStudentT(degrees_of_freedom=nu).sample(_params(mean, scale))
    variance = nu / (nu - 2) * scale**2
    # 5 standard errors; SE(mean) = sqrt(Var / n).
    assert abs(draws.mean().item() - mean) < 5 * math.sqrt(variance / N_DRAWS)
    assert abs(draws.var().item() - variance) < 5 * variance * math.sqrt(3 / N_DRAWS)


# Quantiles with a closed form: Cauchy (nu = 1) and t_2, q_p = (2p - 1) / sqrt(2p(1 - p)).
MEDIAN_ABS = {1.0: 1.0, 2.0: 0.5 / math.sqrt(0.375)}


@pytest.mark.parametrize("nu", sorted(MEDIAN_ABS))
@pytest.mark.parametrize(("mean", "scale"), [(0.0, 1.0), (-1.0, 3.0)])
def test_sample_median_and_median_abs_deviation(nu, mean, scale):
    draws = MeanFieldStudentT(degrees_of_freedom=nu).sample(_params(mean, scale))
    reference = td.StudentT(nu, 0.0, scale)
    # SE of a sample p-quantile: sqrt(p(1-p)/n) / density at the quantile; 5 SE.
    # Median: p = 1/2. Median of |X - mean|: density of |X - mean| is twice the t's.
    se_median = 0.5 / math.sqrt(N_DRAWS) / reference.log_prob(torch.tensor(0.0)).exp()
    mad = MEDIAN_ABS[nu] * scale
    se_mad = 0.5 / math.sqrt(N_DRAWS) / (2 * reference.log_prob(torch.tensor(mad)).exp())
    assert abs(draws.median().item() - mean) < 5 * se_median
    assert abs((draws - mean).abs().median().item() - mad) < 5 * se_mad


def test_heavier_tails_than_normal():
    # P(|T| > 4) = 0.0161 for t_4 (closed-form CDF below), 6.3e-5 for a Normal.
    # SE of a proportion: sqrt(p(1 - p) / n) = 2.8e-4 here; 5 SE.
    draws = MeanFieldStudentT(degrees_of_freedom=4.0).sample(_params(0.0, 1.0))
    tail = (draws.abs() > 4).float().mean().item()
    p = 2 * (1 - _t4_cdf(4.0))
    assert abs(tail - p) < 5 * math.sqrt(p * (1 - p) / N_DRAWS)


def _t4_cdf(x):
    # Closed form CDF of Student-t with 4 degrees of freedom.
    s = x / math.sqrt(x * x + 4)
    return 0.5 + 0.75 * s * (1 - s * s / 3)


def test_sample_shape_and_dtype():
    mean = torch.zeros(4, 3, dtype=torch.float64)
    sample = MeanFieldStudentT().sample((mean, mean))
    assert sample.shape == (4, 3)
    assert sample.dtype == torch.float64


def test_samples_are_reparameterised():
    mean = torch.randn(50, requires_grad=True)
    log_scale = torch.randn(50, requires_grad=True)
    sample = MeanFieldStudentT().sample((mean, log_scale))
    sample.sum().backward()
    # w = mu + exp(s) * t: dw/dmu = 1, dw/ds = w - mu.
    torch.testing.assert_close(mean.grad, torch.ones(50))
    torch.testing.assert_close(log_scale.grad, (sample - mean).detach())


def test_sample_and_log_prob_matches_log_prob():
    dist = MeanFieldStudentT(degrees_of_freedom=3.0)
    mean, log_scale = torch.randn(2, 100)
    sample, log_prob = dist.sample_and_log_prob((mean, log_scale))
    torch.testing.assert_close(log_prob, dist.log_prob(sample, (mean, log_scale)).sum())


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0.0}, "scale must be positive and finite"),
        ({"scale": -2.0}, "scale must be positive and finite"),
        ({"scale": float("nan")}, "scale must be positive and finite"),
        ({"degrees_of_freedom": 0.0}, "degrees_of_freedom must be positive and finite"),
        ({"degrees_of_freedom": -1.0}, "degrees_of_freedom must be positive and finite"),
        ({"mean": float("inf")}, "mean must be finite"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MeanFieldStudentT(**kwargs)


def test_default_variational_parameters():
    dist = MeanFieldStudentT(mean=0.5, scale=2.0, degrees_of_freedom=7.0)
    assert dist._default_variational_parameters == (0.5, math.log(2.0))
    assert dist.distribution_parameters == ("mean", "log_scale")
    assert repr(dist) == "MeanFieldStudentT(degrees_of_freedom=7)"
