import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi import KullbackLeiblerLoss, VILinear, mean_weights
from torch_blue.vi.distributions import (
    Categorical,
    MeanFieldNormal,
    RadialNormal,
    has_closed_form_kl,
)
from torch_blue.vi.utils import UnsupportedDistributionError, norm_constants

N_DRAWS = 100_000
HALF_NORMAL_MEAN = math.sqrt(2 / math.pi)
HALF_NORMAL_VAR = 1 - 2 / math.pi


def _parameters(*shape):
    return torch.randn(shape, dtype=torch.float64), 0.3 * torch.randn(
        shape, dtype=torch.float64
    )


def _draws(dist, parameters, n=N_DRAWS):
    return torch.vmap(lambda _: dist.sample(parameters), randomness="different")(
        torch.empty(n)
    )


@pytest.mark.parametrize("per_unit", [False, True])
def test_sample_mean_and_norm_of_the_noise(per_unit):
    torch.manual_seed(1)
    dist = RadialNormal(per_unit=per_unit)
    mean, log_std = _parameters(3, 4)
    draws = _draws(dist, (mean, log_std))
    z = (draws - mean) / log_std.exp()
    # Mean: per element, 5 standard errors of the sample mean.
    se = draws.std(0) / math.sqrt(N_DRAWS)
    assert ((draws.mean(0) - mean).abs() < 5 * se).all()
    # ||z|| = |r| is half-normal: one norm per tensor, or per row with per_unit.
    norms = z.flatten(1).norm(dim=1) if not per_unit else z.norm(dim=2)
    se_norm = math.sqrt(HALF_NORMAL_VAR / N_DRAWS)
    assert ((norms.mean(0) - HALF_NORMAL_MEAN).abs() < 5 * se_norm).all()


@pytest.mark.parametrize(("per_unit", "dimension"), [(False, 12), (True, 4)])
def test_each_weight_has_variance_sigma_squared_over_d(per_unit, dimension):
    torch.manual_seed(2)
    dist = RadialNormal(per_unit=per_unit)
    mean, log_std = _parameters(3, 4)
    z = (_draws(dist, (mean, log_std)) - mean) / log_std.exp()
    second = z.square()
    # 5 standard errors of the mean of z_i^2.
    se = second.std(0) / math.sqrt(N_DRAWS)
    assert ((second.mean(0) - 1 / dimension).abs() < 5 * se).all()
    torch.testing.assert_close(
        dist.marginal_std((mean, log_std)), log_std.exp() / math.sqrt(dimension)
    )


def test_one_dimensional_radial_is_a_normal():
    dist = RadialNormal()
    mean, log_std = _parameters(1)
    sample = torch.randn(50, 1, dtype=torch.float64)
    expected = td.Normal(mean, log_std.exp()).log_prob(sample)
    torch.testing.assert_close(dist.log_prob(sample, (mean, log_std)), expected)


@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize("constants", [True, False])
def test_density_integrates_to_one_by_importance_sampling(per_unit, constants):
    # E_{w ~ q}[N(w) / q(w)] = integral of N = 1 for any normalised density q: checks the
    # normalisation and that log_prob is the density of the samples. N(w) / q(w) grows
    # like |r|^(D - 1), so it has finite variance.
    torch.manual_seed(3)
    dist = RadialNormal(per_unit=per_unit)
    mean, log_std = _parameters(2, 3)
    draws = _draws(dist, (mean, log_std))
    with norm_constants(constants):
        log_q = dist.log_prob(draws, (mean, log_std)).flatten(1).sum(1)
        log_n = MeanFieldNormal().log_prob(draws, (mean, log_std)).flatten(1).sum(1)
    # Without constants both drop the same D/2 log 2 pi, so the ratio is unchanged.
    ratio = torch.exp(log_n - log_q)
    se = ratio.std() / math.sqrt(N_DRAWS)
    assert abs(ratio.mean().item() - 1) < 5 * se


@pytest.mark.parametrize("per_unit", [False, True])
def test_sample_and_log_prob_agrees_with_log_prob(per_unit):
    dist = RadialNormal(per_unit=per_unit)
    mean, log_std = _parameters(4, 5)
    sample, log_q = dist.sample_and_log_prob((mean, log_std))
    torch.testing.assert_close(log_q, dist.log_prob(sample, (mean, log_std)).sum())


@pytest.mark.parametrize("per_unit", [False, True])
def test_entropy_matches_monte_carlo(per_unit):
    torch.manual_seed(4)
    dist = RadialNormal(per_unit=per_unit)
    mean, log_std = _parameters(3, 5)
    draws = _draws(dist, (mean, log_std), 20_000)
    neg_log_q = -dist.log_prob(draws, (mean, log_std)).flatten(1).sum(1)
    se = neg_log_q.std() / math.sqrt(len(neg_log_q))
    assert abs(neg_log_q.mean() - dist.entropy((mean, log_std))) < 5 * se


def test_log_prob_and_entropy_gradcheck():
    dist = RadialNormal(per_unit=True)
    sample, mean, log_std = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, m, s: dist.log_prob(x, (m, s)), (sample, mean, log_std)
    )
    assert torch.autograd.gradcheck(lambda m, s: dist.entropy((m, s)), (mean, log_std))


def test_reparameterised_gradient_reaches_the_parameters():
    mean, log_std = (p.requires_grad_() for p in _parameters(3, 4))
    sample, log_q = RadialNormal().sample_and_log_prob((mean, log_std))
    (sample.square().sum() + log_q).backward()
    assert mean.grad is not None and log_std.grad.abs().sum() > 0


def test_layer_draws_different_weights_per_lane():
    layer = VILinear(5, 3, variational_distribution=RadialNormal())
    out = layer(torch.ones(1, 5), samples=4)
    assert out.shape == (4, 1, 3)
    assert torch.isfinite(out.log_probs).all()
    assert len({tuple(o.flatten().tolist()) for o in out}) == 4
    plain = VILinear(5, 3, variational_distribution=RadialNormal(), return_log_probs=False)
    assert not torch.equal(*plain(torch.ones(1, 5), samples=2))


def test_mean_weights_use_the_mean():
    layer = VILinear(5, 3, variational_distribution=RadialNormal())
    x = torch.randn(2, 5)
    with mean_weights():
        out = layer(x)
    torch.testing.assert_close(out[0], x @ layer._weight_mean.T + layer._bias_mean)


def test_initialisation_matches_mean_field_normal():
    torch.manual_seed(0)
    radial = VILinear(10, 4, variational_distribution=RadialNormal(std=0.5))
    torch.manual_seed(0)
    normal = VILinear(10, 4, variational_distribution=MeanFieldNormal(std=0.5))
    torch.testing.assert_close(radial._weight_mean, normal._weight_mean)
    torch.testing.assert_close(radial._weight_log_std, normal._weight_log_std)


def test_trains_with_the_monte_carlo_loss():
    layer = VILinear(4, 3, variational_distribution=RadialNormal())
    loss = KullbackLeiblerLoss(Categorical(), 10)(
        layer(torch.randn(6, 4), samples=3), torch.randint(0, 3, (6,))
    )
    loss.backward()
    assert torch.isfinite(layer._weight_log_std.grad).all()


def test_local_reparameterization_is_refused():
    with pytest.raises(UnsupportedDistributionError, match="needs MeanFieldNormal"):
        VILinear(3, 2, variational_distribution=RadialNormal(), estimator="flipout")


def test_closed_form_kl_with_normal_prior():
    assert has_closed_form_kl(MeanFieldNormal(), RadialNormal())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"std": 0.0}, ValueError, r"RadialNormal: std must be positive and finite"),
        ({"mean": math.inf}, ValueError, r"RadialNormal: mean must be finite"),
        ({"per_unit": 1}, TypeError, r"RadialNormal: per_unit must be a bool, got 1"),
    ],
)
def test_invalid_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        RadialNormal(**kwargs)


def test_repr():
    assert repr(RadialNormal()) == "RadialNormal(std=1)"
    assert (
        repr(RadialNormal(std=0.1, per_unit=True)) == "RadialNormal(std=0.1, per_unit=True)"
    )
