import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi import AnalyticalKullbackLeiblerLoss, VILinear
from torch_blue.vi.distributions import (
    Categorical,
    LaplacePrior,
    MeanFieldNormal,
    has_closed_form_kl,
)
from torch_blue.vi.utils import norm_constants


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (0.5, 0.1), (-2.0, 3.0)])
def test_log_prob_matches_torch(loc, scale):
    sample = 2 * torch.randn(5, 4)
    expected = td.Laplace(loc, scale).log_prob(sample)
    torch.testing.assert_close(LaplacePrior(loc, scale).prior_log_prob(sample), expected)


def test_norm_constants_drop_log_2():
    prior = LaplacePrior(scale=0.3)
    sample = torch.randn(10)
    with_constants = prior.prior_log_prob(sample)
    with norm_constants(False):
        without = prior.prior_log_prob(sample)
    torch.testing.assert_close(without, with_constants + math.log(2))


def test_log_prob_gradcheck():
    # Away from the kink at w = loc, where |w - loc| is not differentiable.
    sample = torch.tensor([-1.5, -0.4, 0.7, 2.0], dtype=torch.float64, requires_grad=True)
    loc = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    prior = LaplacePrior()
    assert torch.autograd.gradcheck(
        lambda w, m, s: prior.log_prob(w, (m, s)), (sample, loc, log_scale)
    )


def test_kaiming_rescale_scales_loc_and_scale():
    prior = LaplacePrior(loc=1.0, scale=2.0)
    prior.kaiming_rescale(12)  # factor 1/6
    assert float(prior.loc) == pytest.approx(1 / 6)
    assert float(prior.scale) == pytest.approx(2 * (1 / 6 + 1e-5), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0.0}, r"LaplacePrior: scale must be positive and finite, got 0.0"),
        ({"scale": -2.0}, r"LaplacePrior: scale must be positive and finite, got -2.0"),
        ({"loc": math.nan}, r"LaplacePrior: loc must be finite, got nan"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LaplacePrior(**kwargs)


def test_closed_form_kl_is_used_for_normal_variational():
    assert has_closed_form_kl(LaplacePrior(), MeanFieldNormal())
    model = VILinear(3, 2, prior=LaplacePrior(scale=0.5))
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), dataset_size=10)
    assert loss_fn.monte_carlo_variables == []
    torch.testing.assert_close(loss_fn.prior_matching(), loss_fn.prior_matching())


def test_local_reparameterization_accepts_laplace():
    layer = VILinear(3, 2, prior=LaplacePrior(), estimator="local_reparameterization")
    out = layer(torch.randn(4, 3), samples=3)
    assert torch.isfinite(out.log_probs).all()


def test_the_released_name_is_an_alias():
    from torch_blue.vi.distributions import Laplace

    assert Laplace is LaplacePrior
