import math

import pytest
import torch
from torch import distributions as td
from torch.nn import functional as F  # noqa: N812

from torch_blue.vi import AnalyticalKullbackLeiblerLoss, KullbackLeiblerLoss, VILinear
from torch_blue.vi.distributions import HeteroscedasticNormal, MeanFieldNormal
from torch_blue.vi.utils import ShapeError, norm_constants

LOG_2PI = math.log(2 * math.pi)


def _inverse_softplus(value):
    return torch.log(torch.expm1(torch.as_tensor(value, dtype=torch.float64)))


def _expected_log_likelihood(samples, target, min_scale):
    # (S, *, 2D) outputs -> (S, B) log-likelihoods with torch.distributions.
    mean, raw = samples.chunk(2, dim=-1)
    scale = F.softplus(raw) + min_scale
    log_p = td.Normal(mean, scale).log_prob(target.reshape(mean.shape[1:]))
    return log_p.flatten(start_dim=2).sum(-1)


# ---------------------------------------------------------------- layout
def test_mean_and_scale_splits_the_last_dimension_in_halves():
    output = torch.randn(3, 4, 6)
    mean, scale = HeteroscedasticNormal(min_scale=0.01).mean_and_scale(output)
    torch.testing.assert_close(mean, output[..., :3])
    torch.testing.assert_close(scale, F.softplus(output[..., 3:]) + 0.01)


def test_scale_never_falls_below_min_scale():
    output = torch.cat([torch.zeros(5, 1), torch.full((5, 1), -200.0)], dim=-1)
    _, scale = HeteroscedasticNormal(min_scale=0.05).mean_and_scale(output)
    torch.testing.assert_close(scale, torch.full((5, 1), 0.05))


# ---------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("shape", [(6, 1), (6, 3), (6, 2, 4)])
@pytest.mark.parametrize("n_samples", [1, 5])
def test_sample_log_likelihood_matches_torch(shape, n_samples):
    *batch, features = shape
    samples = torch.randn(n_samples, *batch, 2 * features) * 2
    target = torch.randn(shape)
    actual = HeteroscedasticNormal(min_scale=1e-3).sample_log_likelihood(target, samples)
    assert actual.shape == (n_samples, shape[0])
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, _expected_log_likelihood(samples, target, 1e-3))


def test_single_output_target_may_omit_its_trailing_dimension():
    samples, target = torch.randn(4, 6, 2), torch.randn(6)
    dist = HeteroscedasticNormal()
    with_dim = dist.sample_log_likelihood(target.unsqueeze(-1), samples)
    torch.testing.assert_close(dist.sample_log_likelihood(target, samples), with_dim)
    zero_dim = dist.sample_log_likelihood(target[0], samples[:, 0])
    torch.testing.assert_close(zero_dim, with_dim[:, 0])


def test_log_prob_from_samples_is_log_mean_density():
    samples, target = torch.randn(8, 10, 4), torch.randn(10, 2)
    density = _expected_log_likelihood(samples, target, 1e-3).exp()
    actual = HeteroscedasticNormal().log_prob_from_samples(target, samples)
    torch.testing.assert_close(actual, density.mean(0).log())


def test_log_prob_without_constants_is_shifted():
    samples, target = torch.randn(3, 5, 2), torch.randn(5, 1)
    dist = HeteroscedasticNormal()
    with_constants = dist.sample_log_likelihood(target, samples)
    with norm_constants(False):
        without = dist.sample_log_likelihood(target, samples)
    torch.testing.assert_close(without, with_constants + 0.5 * LOG_2PI)


def test_sample_log_likelihood_gradcheck():
    samples = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 3, dtype=torch.float64)
    dist = HeteroscedasticNormal(min_scale=1e-2)
    assert torch.autograd.gradcheck(
        lambda out: dist.sample_log_likelihood(target, out), (samples,)
    )


# ---------------------------------------------------------------- predictive parameters
def test_predictive_parameters_are_hand_computed_mixture_moments():
    # Two samples for one point: N(0, 1^2) and N(2, 3^2). Mixture mean 1; variance
    # mean of variances (1 + 9) / 2 = 5 plus variance of means ((0-1)^2 + (2-1)^2) / 2
    # = 1, total 6.
    raw = _inverse_softplus([1.0, 3.0])
    samples = torch.stack([torch.tensor([0.0, 2.0], dtype=torch.float64), raw], -1)
    mean, std = HeteroscedasticNormal(min_scale=0.0).predictive_parameters_from_samples(
        samples.unsqueeze(1)
    )
    torch.testing.assert_close(mean, torch.tensor([[1.0]], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([[math.sqrt(6.0)]], dtype=torch.float64))


@pytest.mark.parametrize("n_samples", [1, 7])
def test_predictive_parameters_match_the_mixture_formula(n_samples):
    samples = torch.randn(n_samples, 5, 6)
    dist = HeteroscedasticNormal()
    means, scales = samples[..., :3], F.softplus(samples[..., 3:]) + dist.min_scale
    mean, std = dist.predictive_parameters_from_samples(samples)
    torch.testing.assert_close(mean, means.mean(0))
    expected_var = (scales**2).mean(0) + ((means - means.mean(0)) ** 2).mean(0)
    torch.testing.assert_close(std, expected_var.sqrt())
    if n_samples == 1:  # one sample: just its own scale, never NaN
        torch.testing.assert_close(std, scales[0])


def test_log_prob_from_parameters_is_the_moment_matched_normal():
    samples, target = torch.randn(6, 5, 2), torch.randn(5)
    dist = HeteroscedasticNormal()
    mean, std = dist.predictive_parameters_from_samples(samples)
    actual = dist.log_prob_from_parameters(target, (mean, std))
    assert actual.shape == (5,)  # matched to (5, 1) parameters, not broadcast
    torch.testing.assert_close(actual, td.Normal(mean[:, 0], std[:, 0]).log_prob(target))


# ---------------------------------------------------------------- with the losses
@pytest.mark.parametrize("objective", ["elbo", "log_mean_predictive"])
@pytest.mark.parametrize("n_samples", [1, 4])
@pytest.mark.parametrize("loss_type", ["mc", "analytical"])
def test_usable_with_the_losses(objective, n_samples, loss_type):
    model = VILinear(3, 4, return_log_probs=loss_type == "mc")
    dist = HeteroscedasticNormal()
    if loss_type == "mc":
        loss_fn = KullbackLeiblerLoss(dist, 50, objective=objective)
    else:
        loss_fn = AnalyticalKullbackLeiblerLoss(model, dist, 50, objective=objective)
    loss = loss_fn(model(torch.randn(8, 3), samples=n_samples), torch.randn(8, 2))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_training_tracks_input_dependent_noise():
    # Well-specified model: mean and raw scale linear in x, true scale
    # softplus(1.5 x - 1) + min_scale (0.08 at x = -1, 0.98 at x = 1). With N points
    # uniform on [-1, 1] the fitted log-scale has standard error at most about
    # sqrt(2 / N) (a linear predictor's variance at the edge of the range is 4/N, a
    # scale's Fisher information 2 per point): tolerate 4 of those, 18 % for N = 1000.
    torch.manual_seed(0)
    n = 1000
    dist = HeteroscedasticNormal()

    def true_scale(x):
        return F.softplus(1.5 * x - 1.0) + dist.min_scale

    x = torch.rand(n, 1) * 2 - 1
    y = 1.5 * x + 0.5 + true_scale(x) * torch.randn(n, 1)
    # A small initial weight spread: the posterior is narrow for N = 1000 points.
    model = VILinear(1, 2, variational_distribution=MeanFieldNormal(std=0.01))
    loss_fn = KullbackLeiblerLoss(dist, dataset_size=n)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss_fn(model(x, samples=4), y).backward()
        optimizer.step()
    model.return_log_probs = False
    x_test = torch.tensor([[-1.0], [0.0], [1.0]])
    with torch.no_grad():
        _, scale = dist.mean_and_scale(model(x_test, samples=64))
    log_ratio = (scale.mean(0) / true_scale(x_test)).log()
    assert log_ratio.abs().max() < 4 * math.sqrt(2 / n)


# ---------------------------------------------------------------- errors and repr
@pytest.mark.parametrize(
    ("min_scale", "error", "match"),
    [
        (-0.1, ValueError, "min_scale must be non-negative"),
        (float("nan"), ValueError, "min_scale must be finite"),
        (float("inf"), ValueError, "min_scale must be finite"),
        ("0.1", TypeError, "min_scale must be a number"),
    ],
)
def test_invalid_min_scale_raises(min_scale, error, match):
    with pytest.raises(error, match=match):
        HeteroscedasticNormal(min_scale=min_scale)


def test_zero_min_scale_is_allowed():
    assert HeteroscedasticNormal(min_scale=0).min_scale == 0.0


@pytest.mark.parametrize("dtype", [torch.long, torch.bool])
def test_non_float_target_raises(dtype):
    with pytest.raises(TypeError, match=r"HeteroscedasticNormal: .* floating point"):
        HeteroscedasticNormal().sample_log_likelihood(
            torch.zeros(4, 2, dtype=dtype), torch.randn(3, 4, 4)
        )


def test_non_tensor_target_raises():
    with pytest.raises(TypeError, match="must be a Tensor"):
        HeteroscedasticNormal().sample_log_likelihood([0.0] * 4, torch.randn(3, 4, 2))


@pytest.mark.parametrize("target_shape", [(4, 4), (4,), (5, 2), (3, 4, 2)])
def test_wrong_target_shape_raises(target_shape):
    with pytest.raises(ShapeError, match=r"target shape .* expected \(4, 2\)"):
        HeteroscedasticNormal().sample_log_likelihood(
            torch.randn(target_shape), torch.randn(3, 4, 4)
        )


@pytest.mark.parametrize("output_shape", [(3, 4, 3), (3,)])
def test_odd_output_raises(output_shape):
    with pytest.raises(ShapeError, match="HeteroscedasticNormal: the model output"):
        HeteroscedasticNormal().sample_log_likelihood(
            torch.randn(4), torch.randn(output_shape)
        )
    with pytest.raises(ShapeError, match="even"):
        HeteroscedasticNormal().mean_and_scale(torch.randn(output_shape))


def test_repr():
    assert repr(HeteroscedasticNormal(min_scale=0.01)) == (
        "HeteroscedasticNormal(min_scale=0.01)"
    )


def test_zero_min_scale_with_a_vanishing_raw_scale_is_not_nan():
    # softplus(-200) underflows to 0: with min_scale=0 the density was 0/0 = NaN.
    likelihood = HeteroscedasticNormal(min_scale=0.0)
    output = torch.tensor([[[0.0, -200.0]]])
    exact = likelihood.log_prob_from_samples(torch.tensor([[0.0]]), output)
    assert torch.isfinite(exact).all() and exact.item() > 80  # -log(tiny) = 87.3
    off = likelihood.log_prob_from_samples(torch.tensor([[1.0]]), output)
    assert not torch.isnan(off).any()  # -inf: the model gives that point no density
