import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi import AnalyticalKullbackLeiblerLoss, VILinear
from torch_blue.vi.distributions import (
    Categorical,
    MeanFieldNormal,
    ScaleMixtureNormalPrior,
    has_closed_form_kl,
)
from torch_blue.vi.utils import norm_constants


def _reference(pi, sigma_1, sigma_2):
    mixing = td.Categorical(torch.tensor([pi, 1 - pi], dtype=torch.float64))
    components = td.Normal(
        torch.zeros(2, dtype=torch.float64),
        torch.tensor([sigma_1, sigma_2], dtype=torch.float64),
    )
    return td.MixtureSameFamily(mixing, components)


@pytest.mark.parametrize(
    ("pi", "sigma_1", "sigma_2"),
    [(0.5, 1.0, math.exp(-6)), (0.25, math.exp(-1), math.exp(-8)), (0.75, 0.3, 2.0)],
)
def test_log_prob_matches_torch_mixture(pi, sigma_1, sigma_2):
    sample = torch.cat(
        [torch.randn(50, dtype=torch.float64), torch.tensor([0.0, 1e-4, 5.0, -40.0])]
    )
    prior = ScaleMixtureNormalPrior(pi, sigma_1, sigma_2)
    expected = _reference(pi, sigma_1, sigma_2).log_prob(sample)
    # The hyperparameters are stored in float32.
    torch.testing.assert_close(prior.prior_log_prob(sample), expected, rtol=1e-5, atol=1e-5)


def test_log_prob_is_stable_far_in_the_tails():
    prior = ScaleMixtureNormalPrior(0.5, 1.0, math.exp(-8))
    value = prior.prior_log_prob(torch.tensor([1e3, -1e3]))
    # The narrow component underflows completely; logaddexp keeps the wide one.
    expected = math.log(0.5) - 0.5 * 1e6 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(value, torch.full((2,), expected))


def test_defaults_are_the_middle_of_the_papers_grid():
    prior = ScaleMixtureNormalPrior()
    assert float(prior.pi) == 0.5
    assert float(prior.log_sigma_1) == 0.0
    assert float(prior.log_sigma_2) == pytest.approx(-6.0)


def test_norm_constants_drop_half_log_2pi():
    prior = ScaleMixtureNormalPrior()
    sample = torch.randn(10)
    with_constants = prior.prior_log_prob(sample)
    with norm_constants(False):
        without = prior.prior_log_prob(sample)
    torch.testing.assert_close(without, with_constants + 0.5 * math.log(2 * math.pi))


def test_log_prob_gradcheck():
    sample = torch.randn(8, dtype=torch.float64, requires_grad=True)
    pi = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    log_s1 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    log_s2 = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    prior = ScaleMixtureNormalPrior()
    assert torch.autograd.gradcheck(
        lambda w, p, a, b: prior.log_prob(w, (p, a, b)), (sample, pi, log_s1, log_s2)
    )


def test_kaiming_rescale_scales_both_sigmas_not_pi():
    prior = ScaleMixtureNormalPrior(0.25, 1.0, 0.01)
    prior.kaiming_rescale(12)  # factor 1/6 (plus the 1e-5 of kaiming_rescale)
    factor = 1 / 6 + 1e-5
    assert float(prior.pi) == 0.25
    assert math.exp(float(prior.log_sigma_1)) == pytest.approx(factor, rel=1e-6)
    assert math.exp(float(prior.log_sigma_2)) == pytest.approx(0.01 * factor, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"pi": 0.0},
            ValueError,
            r"ScaleMixtureNormalPrior: pi must be in the open interval",
        ),
        ({"pi": 1.0}, ValueError, r"pi must be in the open interval \(0, 1\), got 1.0"),
        ({"pi": -0.5}, ValueError, r"pi must be in the open interval \(0, 1\), got -0.5"),
        ({"pi": "half"}, TypeError, r"pi must be a number, got 'half'"),
        ({"sigma_1": 0.0}, ValueError, r"sigma_1 must be positive and finite, got 0.0"),
        ({"sigma_2": -1.0}, ValueError, r"sigma_2 must be positive and finite, got -1.0"),
        ({"sigma_2": math.inf}, ValueError, r"sigma_2 must be positive and finite"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        ScaleMixtureNormalPrior(**kwargs)


def test_kl_is_estimated_by_monte_carlo():
    assert not has_closed_form_kl(ScaleMixtureNormalPrior(), MeanFieldNormal())
    model = VILinear(3, 2, prior=ScaleMixtureNormalPrior())
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), dataset_size=10)
    assert loss_fn.monte_carlo_variables == ["weight", "bias"]


def test_the_released_name_is_an_alias():
    from torch_blue.vi.distributions import ScaleMixtureNormal

    assert ScaleMixtureNormal is ScaleMixtureNormalPrior
