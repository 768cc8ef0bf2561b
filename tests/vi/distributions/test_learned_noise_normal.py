import math

import pytest
import torch
from torch import distributions as td
from torch import nn
from torch.func import functional_call

from torch_blue.vi import AnalyticalKullbackLeiblerLoss, KullbackLeiblerLoss, VILinear
from torch_blue.vi.distributions import LearnedNoiseNormal, MeanFieldNormal
from torch_blue.vi.utils import ShapeError, norm_constants

LOG_2PI = math.log(2 * math.pi)


class _LogLikelihood(nn.Module):
    # Lets functional_call swap the learned parameter for a gradcheck input.
    def __init__(self, likelihood):
        super().__init__()
        self.likelihood = likelihood

    def forward(self, target, samples):
        return self.likelihood.sample_log_likelihood(target, samples)


# ---------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("shape", [(6,), (6, 3), (6, 2, 3)])
@pytest.mark.parametrize("n_samples", [1, 5])
def test_sample_log_likelihood_matches_torch(shape, n_samples):
    samples, target = torch.randn(n_samples, *shape), torch.randn(shape)
    actual = LearnedNoiseNormal(std=0.7).sample_log_likelihood(target, samples)
    expected = td.Normal(samples, 0.7).log_prob(target)
    expected = expected.flatten(start_dim=2).sum(-1) if expected.dim() > 2 else expected
    assert actual.shape == (n_samples, shape[0])
    torch.testing.assert_close(actual, expected)


def test_per_output_scales_apply_to_the_last_dimension():
    dist = LearnedNoiseNormal(num_outputs=3)
    with torch.no_grad():
        dist.log_std.copy_(torch.tensor([0.1, 0.5, 2.0]).log())
    samples, target = torch.randn(4, 6, 3), torch.randn(6, 3)
    expected = td.Normal(samples, torch.tensor([0.1, 0.5, 2.0])).log_prob(target).sum(-1)
    torch.testing.assert_close(dist.sample_log_likelihood(target, samples), expected)


def test_log_prob_without_constants_is_shifted():
    samples, target = torch.randn(3, 5), torch.randn(5)
    dist = LearnedNoiseNormal()
    with_constants = dist.sample_log_likelihood(target, samples)
    with norm_constants(False):
        without = dist.sample_log_likelihood(target, samples)
    torch.testing.assert_close(without, with_constants + 0.5 * LOG_2PI)


@pytest.mark.parametrize("num_outputs", [None, 3])
def test_gradcheck_in_output_and_learned_scale(num_outputs):
    dist = LearnedNoiseNormal(num_outputs=num_outputs, dtype=torch.float64)
    wrapped = _LogLikelihood(dist)
    samples = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 3, dtype=torch.float64)
    log_std = (0.3 * torch.randn_like(dist.log_std)).requires_grad_()

    def log_likelihood(out, log_std):
        return functional_call(wrapped, {"likelihood.log_std": log_std}, (target, out))

    assert torch.autograd.gradcheck(log_likelihood, (samples, log_std))


# ---------------------------------------------------------------- predictive parameters
def test_predictive_parameters_are_hand_computed_moments():
    # Samples 0 and 2 around one point, noise 1.5: mean 1, variance 1 + 1.5^2.
    samples = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    dist = LearnedNoiseNormal(std=1.5, dtype=torch.float64)
    mean, std = dist.predictive_parameters_from_samples(samples)
    torch.testing.assert_close(mean, torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([math.sqrt(3.25)], dtype=torch.float64))


def test_predictive_parameters_with_one_sample_are_the_noise():
    samples = torch.randn(1, 6, 2)
    mean, std = LearnedNoiseNormal(std=0.4).predictive_parameters_from_samples(samples)
    torch.testing.assert_close(mean, samples[0])
    torch.testing.assert_close(std, torch.full((6, 2), 0.4))


def test_log_prob_from_parameters_takes_std():
    mean, std, target = torch.randn(6), torch.rand(6) + 0.5, torch.randn(6)
    actual = LearnedNoiseNormal().log_prob_from_parameters(target, (mean, std))
    torch.testing.assert_close(actual, td.Normal(mean, std).log_prob(target))


# ---------------------------------------------------------------- the learned parameter
@pytest.mark.parametrize("loss_type", ["mc", "analytical"])
def test_the_losses_register_the_learned_scale(loss_type):
    dist = LearnedNoiseNormal(std=0.5)
    if loss_type == "mc":
        loss_fn = KullbackLeiblerLoss(dist, 10)
    else:
        loss_fn = AnalyticalKullbackLeiblerLoss(VILinear(2, 1), dist, 10)
    assert [p for p in loss_fn.parameters()] == [dist.log_std]
    assert list(loss_fn.state_dict()) == ["predictive_distribution.log_std"]
    loss_fn.to(torch.float64)
    assert dist.log_std.dtype == torch.float64


def test_state_dict_round_trip():
    dist = LearnedNoiseNormal(std=0.5)
    other = LearnedNoiseNormal()
    other.load_state_dict(dist.state_dict())
    torch.testing.assert_close(other.std, torch.tensor(0.5))


@pytest.mark.parametrize("objective", ["elbo", "log_mean_predictive"])
@pytest.mark.parametrize("n_samples", [1, 4])
@pytest.mark.parametrize("loss_type", ["mc", "analytical"])
def test_usable_with_the_losses(objective, n_samples, loss_type):
    model = VILinear(3, 2, return_log_probs=loss_type == "mc")
    dist = LearnedNoiseNormal()
    if loss_type == "mc":
        loss_fn = KullbackLeiblerLoss(dist, 50, objective=objective)
    else:
        loss_fn = AnalyticalKullbackLeiblerLoss(model, dist, 50, objective=objective)
    loss = loss_fn(model(torch.randn(8, 3), samples=n_samples), torch.randn(8, 2))
    assert torch.isfinite(loss)
    loss.backward()
    assert dist.log_std.grad is not None and torch.isfinite(dist.log_std.grad)


@pytest.mark.parametrize("true_std", [[0.3], [0.1, 0.5]])
def test_training_recovers_the_true_noise(true_std):
    # The maximum-likelihood noise scale of N points has standard error
    # sigma / sqrt(2 N) (the ELBO adds only O(1/N) posterior spread); allow 4 of them.
    torch.manual_seed(0)
    n, sigma = 1000, torch.tensor(true_std)
    outputs = len(true_std)
    x = torch.randn(n, 1)
    y = x * torch.linspace(2.0, -1.0, outputs) + 0.5 + sigma * torch.randn(n, outputs)
    dist = LearnedNoiseNormal(num_outputs=None if outputs == 1 else outputs)
    model = VILinear(1, outputs, variational_distribution=MeanFieldNormal(std=0.01))
    loss_fn = KullbackLeiblerLoss(dist, dataset_size=n)
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss_fn(model(x, samples=4), y).backward()
        optimizer.step()
    learned = dist.std.detach().expand(outputs)
    assert ((learned - sigma).abs() < 4 * sigma / math.sqrt(2 * n)).all()


# ---------------------------------------------------------------- errors and repr
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"std": 0.0}, ValueError, "std must be positive"),
        ({"std": -1.0}, ValueError, "std must be positive"),
        ({"std": float("inf")}, ValueError, "std must be positive and finite"),
        ({"std": "1"}, TypeError, "std must be a number"),
        ({"num_outputs": 0}, ValueError, "num_outputs must be a positive int"),
        ({"num_outputs": 2.0}, ValueError, "num_outputs must be a positive int"),
        ({"num_outputs": True}, ValueError, "num_outputs must be a positive int"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, match):
    with pytest.raises(error, match=f"LearnedNoiseNormal: {match}"):
        LearnedNoiseNormal(**kwargs)


@pytest.mark.parametrize("dtype", [torch.long, torch.bool])
def test_non_float_target_raises(dtype):
    with pytest.raises(TypeError, match=r"LearnedNoiseNormal: .* floating point"):
        LearnedNoiseNormal().sample_log_likelihood(
            torch.zeros(4, 2, dtype=dtype), torch.randn(3, 4, 2)
        )


@pytest.mark.parametrize("target_shape", [(4,), (4, 3), (5, 2)])
def test_wrong_target_shape_raises(target_shape):
    with pytest.raises(ShapeError, match=r"LearnedNoiseNormal: target shape"):
        LearnedNoiseNormal().sample_log_likelihood(
            torch.randn(target_shape), torch.randn(3, 4, 2)
        )


def test_output_without_num_outputs_features_raises():
    with pytest.raises(ShapeError, match="must have num_outputs=3 features"):
        LearnedNoiseNormal(num_outputs=3).sample_log_likelihood(
            torch.randn(4, 2), torch.randn(3, 4, 2)
        )


def test_repr():
    assert repr(LearnedNoiseNormal(std=0.5)) == "LearnedNoiseNormal(std=0.5)"
    assert repr(LearnedNoiseNormal(num_outputs=3)) == "LearnedNoiseNormal(num_outputs=3)"
