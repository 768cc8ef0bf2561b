import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi import VILinear
from torch_blue.vi.distributions import BasicQuietPrior
from torch_blue.vi.utils import norm_constants

LOG_2PI = math.log(2 * math.pi)


def _expected(sample, mean, std_ratio, mean_mean, mean_std):
    weight = td.Normal(mean, (std_ratio * mean).abs()).log_prob(sample)
    hyper = td.Normal(mean_mean, mean_std).log_prob(mean)
    return weight + hyper


def _means(*shape):
    # Bounded away from 0: near 0 the weight variance (r * mean)^2 vanishes and float32
    # round-off of the huge (w - mean)^2 / variance term swamps any comparison.
    return (0.5 + torch.rand(shape)) * torch.randn(shape).sign()


@pytest.mark.parametrize(
    ("std_ratio", "mean_mean", "mean_std"), [(1.0, 0.0, 1.0), (0.3, 0.5, 2.0)]
)
def test_prior_log_prob_matches_formula(std_ratio, mean_mean, mean_std):
    sample = torch.randn(5, 4)
    mean = _means(5, 4)
    prior = BasicQuietPrior(std_ratio=std_ratio, mean_mean=mean_mean, mean_std=mean_std)
    actual = prior.prior_log_prob(sample, (mean,))
    expected = _expected(sample, mean, std_ratio, mean_mean, mean_std)
    torch.testing.assert_close(actual, expected)


def test_log_prob_takes_explicit_hyperparameters():
    sample, mean = torch.randn(8), _means(8)
    prior = BasicQuietPrior(std_ratio=0.5)
    actual = prior.log_prob(sample, (torch.tensor(1.0), torch.tensor(3.0), mean))
    torch.testing.assert_close(actual, _expected(sample, mean, 0.5, 1.0, 3.0))


def test_log_prob_without_constants_is_shifted():
    sample, mean = torch.randn(8), _means(8)
    prior = BasicQuietPrior()
    with_constants = prior.prior_log_prob(sample, (mean,))
    with norm_constants(False):
        without = prior.prior_log_prob(sample, (mean,))
    # Two Normal factors, each -0.5 * log(2 pi).
    torch.testing.assert_close(without, with_constants + LOG_2PI)


def test_log_prob_gradcheck():
    sample = torch.randn(6, dtype=torch.float64, requires_grad=True)
    mean = (torch.rand(6, dtype=torch.float64) + 0.5).requires_grad_()
    mean_mean = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    mean_std = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    prior = BasicQuietPrior(std_ratio=0.7)
    assert torch.autograd.gradcheck(
        lambda x, m, mm, ms: prior.log_prob(x, (mm, ms, m)),
        (sample, mean, mean_mean, mean_std),
    )


def test_get_parameters_returns_hyperprior():
    prior = BasicQuietPrior(std_ratio=0.5, mean_mean=0.25, mean_std=2.0)
    mean_mean, mean_std = prior.get_parameters()
    torch.testing.assert_close(mean_mean, torch.tensor(0.25))
    torch.testing.assert_close(mean_std, torch.tensor(2.0))
    assert prior._required_parameters == ("mean",)


def test_kaiming_rescale_scales_hyperprior_not_ratio():
    prior = BasicQuietPrior(std_ratio=0.5, mean_mean=1.0, mean_std=2.0)
    prior.kaiming_rescale(fan_in=12)  # factor 1 / sqrt(36) = 1 / 6
    torch.testing.assert_close(prior.mean_mean, torch.tensor(1.0 / 6))
    torch.testing.assert_close(prior.mean_std, torch.tensor(2.0 / 6))
    assert prior._std_ratio == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std_ratio": 0.0}, "std_ratio must be positive and finite"),
        ({"std_ratio": -1.0}, "std_ratio must be positive and finite"),
        ({"mean_std": -1.0}, "mean_std must be positive and finite"),
        ({"mean_std": 0.0}, "mean_std must be positive and finite"),
        ({"mean_mean": float("nan")}, "mean_mean must be finite"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BasicQuietPrior(**kwargs)


def test_reset_parameters_to_prior_draws_from_hyperprior():
    torch.manual_seed(0)
    mean_mean, mean_std, ratio = 0.5, 2.0, 0.3
    layer = VILinear(
        500,
        400,
        prior=BasicQuietPrior(std_ratio=ratio, mean_mean=mean_mean, mean_std=mean_std),
        prior_initialization=True,
    )
    mean = layer._weight_mean.detach()
    n = mean.numel()
    # 5 standard errors: SE(mean) = s / sqrt(n), SE(sample std) ~ s / sqrt(2n).
    assert abs(mean.mean().item() - mean_mean) < 5 * mean_std / math.sqrt(n)
    assert abs(mean.std().item() - mean_std) < 5 * mean_std / math.sqrt(2 * n)
    torch.testing.assert_close(
        layer._weight_log_std.detach().exp(), ratio * mean.abs(), rtol=1e-5, atol=1e-8
    )
