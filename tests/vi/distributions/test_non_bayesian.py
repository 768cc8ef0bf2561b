import pytest
import torch

from torch_blue.vi import VILinear
from torch_blue.vi.distributions import NonBayesian, Prior, UniformPrior
from torch_blue.vi.utils import ShapeError, UnsupportedDistributionError, norm_constants


# ---------------------------------------------------------------- UniformPrior
@pytest.mark.parametrize("shape", [(), (3,), (4, 5)])
def test_uniform_log_prob_is_zero(shape):
    sample = torch.randn(shape) * 100
    for log_prob in (
        UniformPrior().log_prob(sample, (None,)),
        UniformPrior().prior_log_prob(sample),
    ):
        assert log_prob.shape == sample.shape
        assert torch.equal(log_prob, torch.zeros(shape))


def test_uniform_log_prob_is_zero_without_constants():
    with norm_constants(False):
        assert torch.equal(UniformPrior().prior_log_prob(torch.ones(3)), torch.zeros(3))


def test_uniform_kaiming_rescale_is_a_no_op():
    prior = UniformPrior()
    prior.kaiming_rescale(fan_in=10)
    assert prior.mean is None
    assert torch.equal(prior.prior_log_prob(torch.ones(2)), torch.zeros(2))


def test_uniform_reset_parameters_to_prior_unsupported():
    layer = VILinear(3, 2)
    with pytest.raises(UnsupportedDistributionError, match="does not support prior_init"):
        UniformPrior().reset_parameters_to_prior(layer, "weight")


# ---------------------------------------------------------------- variational
def test_non_bayesian_plays_all_roles():
    assert isinstance(NonBayesian(), Prior)
    assert torch.equal(NonBayesian().prior_log_prob(torch.randn(3)), torch.zeros(3))


def test_sample_returns_mean():
    mean = torch.randn(4, 3, requires_grad=True)
    sample = NonBayesian().sample((mean,))
    assert torch.equal(sample, mean)
    sample.sum().backward()
    assert torch.equal(mean.grad, torch.ones(4, 3))


def test_sample_and_log_prob_returns_mean_and_zeros():
    mean = torch.randn(4, 3)
    sample, log_prob = NonBayesian().sample_and_log_prob((mean,))
    assert torch.equal(sample, mean)
    assert torch.equal(log_prob, torch.zeros(()))


def test_layer_is_deterministic():
    layer = VILinear(3, 2, variational_distribution=NonBayesian())
    out = layer(torch.randn(5, 3), samples=4)
    assert torch.equal(out[0], out[3])


# ---------------------------------------------------------------- predictive
LOSSES = {
    "MSE": lambda d: d.square(),
    "L2": lambda d: d.square(),
    "MAE": lambda d: d.abs(),
    "L1": lambda d: d.abs(),
}


@pytest.mark.parametrize("loss_type", sorted(LOSSES))
@pytest.mark.parametrize("shape", [(6,), (6, 3), (6, 2, 2)])
def test_sample_log_likelihood_is_negative_loss(loss_type, shape):
    samples = torch.randn(4, *shape)
    target = torch.randn(shape)
    expected = -LOSSES[loss_type](samples - target)
    if expected.dim() > 2:
        expected = expected.flatten(start_dim=2).sum(-1)
    actual = NonBayesian(loss_type).sample_log_likelihood(target, samples)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("loss_type", sorted(LOSSES))
def test_log_prob_from_samples_uses_mean_prediction(loss_type):
    samples = torch.randn(4, 6, 3)
    target = torch.randn(6, 3)
    expected = -LOSSES[loss_type](samples.mean(0) - target).sum(-1)
    actual = NonBayesian(loss_type).log_prob_from_samples(target, samples)
    torch.testing.assert_close(actual, expected)


def test_predictive_parameters_from_samples_is_mean():
    samples = torch.randn(5, 6, 3)
    (mean,) = NonBayesian("MSE").predictive_parameters_from_samples(samples)
    torch.testing.assert_close(mean, samples.mean(0))


def test_predictive_without_loss_type_raises():
    with pytest.raises(ValueError, match="set loss_type"):
        NonBayesian().sample_log_likelihood(torch.randn(6), torch.randn(2, 6))


@pytest.mark.parametrize("loss_type", ["mse", "L3", "cross_entropy", 2])
def test_invalid_loss_type_raises(loss_type):
    with pytest.raises(ValueError, match="loss_type must be"):
        NonBayesian(loss_type)


def test_wrong_target_shape_raises():
    with pytest.raises(ShapeError, match="does not match"):
        NonBayesian("MSE").sample_log_likelihood(torch.randn(5), torch.randn(2, 6))
