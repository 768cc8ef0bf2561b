import math

import torch

from torch_blue.vi import AnalyticalKullbackLeiblerLoss, VILinear
from torch_blue.vi.distributions import (
    Categorical,
    LogUniformPrior,
    MeanFieldNormal,
    has_closed_form_kl,
)
from torch_blue.vi.utils import norm_constants

EULER_GAMMA = 0.5772156649015329


def test_log_prob_is_minus_log_abs_w_minus_the_constant():
    sample = torch.tensor([0.5, -2.0, 1e-3], dtype=torch.float64)
    constant = 0.5 * (math.log(2 * math.pi) + 1 + EULER_GAMMA + math.log(2))
    expected = -torch.log(sample.abs()) - constant
    torch.testing.assert_close(LogUniformPrior().prior_log_prob(sample), expected)
    assert LogUniformPrior.constant() == constant


def test_norm_constants_drop_half_log_2pi():
    sample = torch.randn(5)
    with_constants = LogUniformPrior().prior_log_prob(sample)
    with norm_constants(False):
        without = LogUniformPrior().prior_log_prob(sample)
    torch.testing.assert_close(without, with_constants + 0.5 * math.log(2 * math.pi))


def test_log_prob_gradcheck():
    sample = torch.tensor([0.3, -1.2, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LogUniformPrior().prior_log_prob, (sample,))


def test_is_scale_invariant_and_not_rescaled():
    prior = LogUniformPrior()
    prior.kaiming_rescale(100)
    assert prior.get_parameters() == ()
    sample = torch.tensor([0.1, 0.2])
    # Scaling w by c only shifts log p by -log c per weight: no scale to adapt.
    shift = LogUniformPrior().prior_log_prob(3 * sample) - prior.prior_log_prob(sample)
    torch.testing.assert_close(shift, torch.full((2,), -math.log(3)))


def test_repr():
    assert repr(LogUniformPrior()) == "LogUniformPrior()"


def test_closed_form_kl_is_used_for_normal_variational():
    assert has_closed_form_kl(LogUniformPrior(), MeanFieldNormal())
    model = VILinear(3, 2, prior=LogUniformPrior())
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), dataset_size=10)
    assert loss_fn.monte_carlo_variables == []


def test_local_reparameterization_accepts_log_uniform():
    layer = VILinear(3, 2, prior=LogUniformPrior(), estimator="local_reparameterization")
    out = layer(torch.randn(4, 3), samples=3)
    assert torch.isfinite(out.log_probs).all()
