import math

import pytest
import torch
from torch import distributions as td
from torch import nn
from torch.func import functional_call

from torch_blue.vi import AnalyticalKullbackLeiblerLoss, KullbackLeiblerLoss, VILinear
from torch_blue.vi.distributions import (
    LearnedNoiseNormal,
    MeanFieldNormal,
    StudentTLikelihood,
)
from torch_blue.vi.utils import ShapeError, norm_constants


class _LogLikelihood(nn.Module):
    # Lets functional_call swap the learned parameter for a gradcheck input.
    def __init__(self, likelihood):
        super().__init__()
        self.likelihood = likelihood

    def forward(self, target, samples):
        return self.likelihood.sample_log_likelihood(target, samples)


# ---------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("nu", [0.5, 1.0, 4.0, 30.0])
@pytest.mark.parametrize("shape", [(6,), (6, 3)])
@pytest.mark.parametrize("n_samples", [1, 5])
def test_sample_log_likelihood_matches_torch(nu, shape, n_samples):
    samples, target = torch.randn(n_samples, *shape), torch.randn(shape) * 3
    dist = StudentTLikelihood(scale=0.7, degrees_of_freedom=nu)
    expected = td.StudentT(nu, samples, 0.7).log_prob(target)
    expected = expected.sum(-1) if expected.dim() > 2 else expected
    actual = dist.sample_log_likelihood(target, samples)
    assert actual.shape == (n_samples, shape[0])
    torch.testing.assert_close(actual, expected)


def test_log_prob_from_parameters_matches_torch():
    loc, scale, target = torch.randn(6), torch.rand(6) + 0.5, torch.randn(6)
    actual = StudentTLikelihood(degrees_of_freedom=3.0).log_prob_from_parameters(
        target, (loc, scale)
    )
    torch.testing.assert_close(actual, td.StudentT(3.0, loc, scale).log_prob(target))


def test_log_prob_without_constants_is_shifted():
    nu = 3.0
    samples, target = torch.randn(3, 5), torch.randn(5)
    dist = StudentTLikelihood(degrees_of_freedom=nu)
    with_constants = dist.sample_log_likelihood(target, samples)
    with norm_constants(False):
        without = dist.sample_log_likelihood(target, samples)
    constant = (
        math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    )
    torch.testing.assert_close(without, with_constants - constant)


def test_an_outlier_costs_logarithmically_not_quadratically():
    # Residual 50, scale 1, nu = 3: the Student-t loses 2 log(1 + 2500 / 3) = 13.5
    # nats against a perfect fit, the Normal 50^2 / 2 = 1250.
    target, samples = torch.tensor([0.0, 50.0]), torch.zeros(1, 2)
    t = StudentTLikelihood(degrees_of_freedom=3.0).sample_log_likelihood(target, samples)
    normal = MeanFieldNormal().sample_log_likelihood(target, samples)
    torch.testing.assert_close(t[0, 0] - t[0, 1], 2 * torch.tensor(2503 / 3).log())
    torch.testing.assert_close(normal[0, 0] - normal[0, 1], torch.tensor(1250.0))


@pytest.mark.parametrize("learn_scale", [False, True])
def test_gradcheck_in_output_and_scale(learn_scale):
    dist = StudentTLikelihood(
        degrees_of_freedom=3.0, learn_scale=learn_scale, dtype=torch.float64
    )
    wrapped = _LogLikelihood(dist)
    samples = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 2, dtype=torch.float64) * 3
    log_scale = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)

    def log_likelihood(out, log_scale):
        return functional_call(wrapped, {"likelihood.log_scale": log_scale}, (target, out))

    assert torch.autograd.gradcheck(log_likelihood, (samples, log_scale))


# ---------------------------------------------------------------- predictive parameters
def test_predictive_parameters_are_hand_computed():
    # Samples 0 and 2, scale 1.5: location 1, scale sqrt(1.5^2 + 1).
    samples = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    dist = StudentTLikelihood(scale=1.5, dtype=torch.float64)
    loc, scale = dist.predictive_parameters_from_samples(samples)
    torch.testing.assert_close(loc, torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(scale, torch.tensor([math.sqrt(3.25)], dtype=torch.float64))


def test_predictive_parameters_with_one_sample_are_the_scale():
    samples = torch.randn(1, 6)
    loc, scale = StudentTLikelihood(scale=0.4).predictive_parameters_from_samples(samples)
    torch.testing.assert_close(loc, samples[0])
    torch.testing.assert_close(scale, torch.full((6,), 0.4))


# ---------------------------------------------------------------- the scale as state
def test_learned_scale_is_a_parameter_of_the_loss():
    dist = StudentTLikelihood(scale=0.5, learn_scale=True)
    loss_fn = KullbackLeiblerLoss(dist, 10)
    assert list(loss_fn.parameters()) == [dist.log_scale]
    assert list(loss_fn.state_dict()) == ["predictive_distribution.log_scale"]


def test_fixed_scale_is_a_buffer_that_follows_the_loss():
    dist = StudentTLikelihood(scale=0.5)
    loss_fn = KullbackLeiblerLoss(dist, 10)
    assert list(loss_fn.parameters()) == []
    assert list(loss_fn.state_dict()) == []  # a hyperparameter, not checkpoint state
    loss_fn.to(torch.float64)
    assert dist.log_scale.dtype == torch.float64
    torch.testing.assert_close(dist.scale, torch.tensor(0.5, dtype=torch.float64))


@pytest.mark.parametrize("objective", ["elbo", "log_mean_predictive"])
@pytest.mark.parametrize("n_samples", [1, 4])
@pytest.mark.parametrize("loss_type", ["mc", "analytical"])
def test_usable_with_the_losses(objective, n_samples, loss_type):
    model = VILinear(3, 2, return_log_probs=loss_type == "mc")
    dist = StudentTLikelihood(learn_scale=True)
    if loss_type == "mc":
        loss_fn = KullbackLeiblerLoss(dist, 50, objective=objective)
    else:
        loss_fn = AnalyticalKullbackLeiblerLoss(model, dist, 50, objective=objective)
    loss = loss_fn(model(torch.randn(8, 3), samples=n_samples), torch.randn(8, 2))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(dist.log_scale.grad)


def _fit_line(likelihood, x, y):
    model = VILinear(1, 1, variational_distribution=MeanFieldNormal(std=0.01))
    loss_fn = KullbackLeiblerLoss(likelihood, dataset_size=len(x))
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss_fn(model(x, samples=4), y).backward()
        optimizer.step()
    return torch.stack([model._weight_mean.detach()[0, 0], model._bias_mean.detach()[0]])


def test_robust_fit_of_a_line_with_outliers():
    # y = 2 x + 1 + 0.1 noise, and 20 % of the points shifted up by 5. Least squares
    # (the Normal likelihood) moves the intercept by about 0.2 * 5 = 1; the Student-t
    # ignores the outliers. With 160 inliers the intercept's standard error is about
    # 0.1 / sqrt(160) = 0.008 and the slope's 0.014, so 0.1 is a loose bound.
    torch.manual_seed(0)
    n, truth = 200, torch.tensor([2.0, 1.0])
    x = torch.rand(n, 1) * 2 - 1
    y = truth[0] * x + truth[1] + 0.1 * torch.randn(n, 1)
    y[torch.rand(n) < 0.2] += 5.0
    robust = _fit_line(StudentTLikelihood(degrees_of_freedom=2.0, learn_scale=True), x, y)
    normal = _fit_line(LearnedNoiseNormal(), x, y)
    robust_error = (robust - truth).norm()
    assert robust_error < 0.1
    assert robust_error < (normal - truth).norm() / 5


# ---------------------------------------------------------------- errors and repr
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": 0.0}, ValueError, "scale must be positive"),
        ({"scale": -1.0}, ValueError, "scale must be positive"),
        ({"scale": float("nan")}, ValueError, "scale must be positive and finite"),
        ({"degrees_of_freedom": 0.0}, ValueError, "degrees_of_freedom must be positive"),
        ({"degrees_of_freedom": -2.0}, ValueError, "degrees_of_freedom must be positive"),
        ({"degrees_of_freedom": None}, TypeError, "degrees_of_freedom must be a number"),
        ({"learn_scale": 1}, TypeError, "learn_scale must be a bool"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, match):
    with pytest.raises(error, match=f"StudentTLikelihood: {match}"):
        StudentTLikelihood(**kwargs)


@pytest.mark.parametrize("dtype", [torch.long, torch.bool])
def test_non_float_target_raises(dtype):
    with pytest.raises(TypeError, match=r"StudentTLikelihood: .* floating point"):
        StudentTLikelihood().sample_log_likelihood(
            torch.zeros(4, 2, dtype=dtype), torch.randn(3, 4, 2)
        )


@pytest.mark.parametrize("target_shape", [(4,), (4, 3), (5, 2)])
def test_wrong_target_shape_raises(target_shape):
    with pytest.raises(ShapeError, match=r"StudentTLikelihood: target shape"):
        StudentTLikelihood().sample_log_likelihood(
            torch.randn(target_shape), torch.randn(3, 4, 2)
        )


def test_repr():
    assert repr(StudentTLikelihood()) == (
        "StudentTLikelihood(scale=1, degrees_of_freedom=4, learn_scale=False)"
    )
    assert repr(StudentTLikelihood(0.5, 3, learn_scale=True)) == (
        "StudentTLikelihood(scale=0.5, degrees_of_freedom=3, learn_scale=True)"
    )
