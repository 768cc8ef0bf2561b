import math
import warnings

import pytest
import torch

from torch_blue.vi import VILinear
from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    Distribution,
    MeanFieldNormal,
    MeanFieldStudentT,
    PredictiveDistribution,
    Prior,
    UniformPrior,
    VariationalDistribution,
)
from torch_blue.vi.utils import UnsupportedDistributionError


class _NoRole(Distribution):
    distribution_parameters = ("loc",)

    def log_prob(self, sample, parameters):
        return torch.zeros_like(sample)


class _PlainPrior(Prior):
    distribution_parameters = ("loc", "log_width")

    def __init__(self):
        self.loc = torch.tensor(1.0)
        self.log_width = torch.tensor(0.0)

    def log_prob(self, sample, parameters):
        loc, log_width, *extra = parameters
        return -(sample - loc).abs() * torch.exp(-log_width) + sum(extra)


# ---------------------------------------------------------------- roles
def test_distribution_without_role_raises():
    with pytest.raises(TypeError, match="must derive from at least one of Prior"):
        _NoRole()


def test_distribution_with_role_instantiates():
    prior = _PlainPrior()
    assert prior.primary_parameter == "loc"
    assert repr(prior) == "_PlainPrior()"


@pytest.mark.parametrize(
    ("dist", "roles"),
    [
        (MeanFieldNormal(), (Prior, VariationalDistribution, PredictiveDistribution)),
        (MeanFieldStudentT(), (VariationalDistribution,)),
        (Categorical(), (PredictiveDistribution,)),
        (BasicQuietPrior(), (Prior,)),
    ],
)
def test_roles(dist, roles):
    for role in (Prior, VariationalDistribution, PredictiveDistribution):
        assert isinstance(dist, role) is (role in roles)


def test_prior_log_prob_appends_hyperparameters():
    sample = torch.tensor([0.0, 1.0, 3.0])
    extra = torch.tensor([0.5, 0.5, 0.5])
    actual = _PlainPrior().prior_log_prob(sample, (extra,))
    torch.testing.assert_close(actual, torch.tensor([-0.5, 0.5, -1.5]))


# ---------------------------------------------------------------- match_parameters
@pytest.mark.parametrize(
    ("dist", "names", "expected"),
    [
        (MeanFieldNormal(), ("mean",), ({"mean": 0}, {"log_std": 1})),
        (MeanFieldNormal(), ("mean", "log_std"), ({"mean": 0, "log_std": 1}, {})),
        (MeanFieldNormal(), (), ({}, {"mean": 0, "log_std": 1})),
        (MeanFieldStudentT(), ("mean", "log_std"), ({"mean": 0}, {"log_scale": 1})),
        (MeanFieldNormal(), ("log_std",), ({"log_std": 1}, {"mean": 0})),
    ],
)
def test_match_parameters(dist, names, expected):
    assert dist.match_parameters(names) == expected


# ---------------------------------------------------------------- kaiming_rescale
@pytest.mark.parametrize("fan_in", [1, 12, 300])
def test_kaiming_rescale_scales_mean_and_log_std(fan_in):
    prior = MeanFieldNormal(mean=0.8, std=2.0)
    prior.kaiming_rescale(fan_in)
    scale = 1 / math.sqrt(3 * fan_in)
    torch.testing.assert_close(prior.mean, torch.tensor(0.8 * scale))
    torch.testing.assert_close(
        prior.log_std, torch.tensor(math.log(2.0) + math.log(scale + 1e-5))
    )
    # The std is multiplied by (approximately, up to eps = 1e-5) the same factor.
    torch.testing.assert_close(prior.std, torch.tensor(2.0 * scale), rtol=1e-3, atol=0)


def test_kaiming_rescale_custom_eps():
    prior = MeanFieldNormal(std=1.0)
    prior.kaiming_rescale(3, eps=0.1)  # scale = 1/3
    torch.testing.assert_close(prior.log_std, torch.tensor(math.log(1 / 3 + 0.1)))


def test_kaiming_rescale_zero_fan_in():
    prior = MeanFieldNormal(mean=0.8, std=2.0)
    prior.kaiming_rescale(0)
    torch.testing.assert_close(prior.mean, torch.tensor(0.0))
    torch.testing.assert_close(prior.log_std, torch.tensor(math.log(2.0) + math.log(1e-5)))


def test_kaiming_rescale_twice_warns_and_keeps_values():
    prior = MeanFieldNormal(mean=0.8, std=2.0)
    prior.kaiming_rescale(12)
    mean, log_std = prior.mean.clone(), prior.log_std.clone()
    with pytest.warns(UserWarning, match="rescaled already"):
        prior.kaiming_rescale(12)
    assert torch.equal(prior.mean, mean)
    assert torch.equal(prior.log_std, log_std)


def test_kaiming_rescale_is_per_instance():
    first, second = MeanFieldNormal(), MeanFieldNormal()
    first.kaiming_rescale(12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second.kaiming_rescale(12)
    torch.testing.assert_close(first.log_std, second.log_std)


@pytest.mark.parametrize("fan_in", [-1, 2.0, "3"])
def test_kaiming_rescale_invalid_fan_in(fan_in):
    with pytest.raises(ValueError, match="fan_in must be a non-negative int"):
        MeanFieldNormal().kaiming_rescale(fan_in)


# ---------------------------------------------------------------- reset to prior
@pytest.mark.parametrize("prior", [_PlainPrior(), UniformPrior()])
def test_reset_parameters_to_prior_unsupported(prior):
    layer = VILinear(3, 2)
    with pytest.raises(
        UnsupportedDistributionError,
        match=r"does not support prior_initialization.*'weight'",
    ):
        prior.reset_parameters_to_prior(layer, "weight")


# ---------------------------------------------------------------- variational init
@pytest.mark.parametrize("kaiming", [True, False])
def test_reset_variational_parameters(kaiming):
    fan_in, std = 16, 0.5
    layer = VILinear(
        fan_in,
        300,
        variational_distribution=MeanFieldNormal(std=std),
        kaiming_initialization=kaiming,
    )
    mean = layer._weight_mean.detach()
    log_std = layer._weight_log_std.detach()
    bound = 1 / math.sqrt(fan_in)
    assert mean.abs().max() <= bound
    # Uniform(-b, b): sd b / sqrt(3); E[x^4] = b^4 / 5, so Var(x^2) = 4 b^4 / 45 and
    # SE(sample sd) ~ sqrt(Var(x^2)) / (2 sd sqrt(n)) = 0.258 b / sqrt(n). 5 SE each.
    n = mean.numel()
    assert abs(mean.mean().item()) < 5 * bound / math.sqrt(3 * n)
    assert abs(mean.std().item() - bound / math.sqrt(3)) < 5 * 0.2582 * bound / math.sqrt(n)
    expected = math.log(std) + (math.log(bound + 1e-5) if kaiming else 0.0)
    torch.testing.assert_close(log_std, torch.full_like(log_std, expected))


def test_kaiming_rescale_rejects_a_bool_fan_in():
    with pytest.raises(ValueError, match="fan_in must be a non-negative int"):
        MeanFieldNormal().kaiming_rescale(True)
