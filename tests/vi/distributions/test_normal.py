import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi import VILinear
from torch_blue.vi.distributions import MeanFieldNormal, Normal
from torch_blue.vi.utils import ShapeError, norm_constants, use_norm_constants

LOG_2PI = math.log(2 * math.pi)
N_DRAWS = 200_000
PARAMS = [(0.0, 1.0), (1.5, 0.3), (-2.0, 4.0)]


def _params(mean, std, n=N_DRAWS, dtype=torch.float32):
    return (
        torch.full((n,), mean, dtype=dtype),
        torch.full((n,), math.log(std), dtype=dtype),
    )


def test_normal_is_alias():
    assert Normal is MeanFieldNormal


# ---------------------------------------------------------------- log_prob
@pytest.mark.parametrize(("mean", "std"), PARAMS)
def test_log_prob_matches_torch(mean, std):
    sample = torch.randn(7, 3) * 3
    means = torch.full((7, 3), mean) + 0.1 * torch.randn(7, 3)
    log_std = torch.full((7, 3), math.log(std)) + 0.1 * torch.randn(7, 3)
    expected = td.Normal(means, log_std.exp()).log_prob(sample)
    actual = MeanFieldNormal().log_prob(sample, (means, log_std))
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(("mean", "std"), PARAMS)
def test_prior_log_prob_uses_hyperparameters(mean, std):
    sample = torch.randn(5, 4)
    expected = td.Normal(mean, std).log_prob(sample)
    torch.testing.assert_close(MeanFieldNormal(mean, std).prior_log_prob(sample), expected)


@pytest.mark.parametrize("switch", ["global", "context"])
def test_log_prob_without_constants_is_shifted(switch):
    sample, mean, log_std = torch.randn(3, 10)
    dist = MeanFieldNormal()
    with_constants = dist.log_prob(sample, (mean, log_std))
    if switch == "global":
        use_norm_constants(False)
        without = dist.log_prob(sample, (mean, log_std))
    else:
        with norm_constants(False):
            without = dist.log_prob(sample, (mean, log_std))
    torch.testing.assert_close(without, with_constants + 0.5 * LOG_2PI)


def test_log_prob_gradcheck():
    sample, mean, log_std = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    dist = MeanFieldNormal()
    assert torch.autograd.gradcheck(
        lambda x, m, s: dist.log_prob(x, (m, s)), (sample, mean, log_std)
    )


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize(("mean", "std"), PARAMS)
@pytest.mark.parametrize("method", ["sample", "sample_and_log_prob"])
def test_sample_moments(mean, std, method):
    dist = MeanFieldNormal()
    draws = getattr(dist, method)(_params(mean, std))
    if method == "sample_and_log_prob":
        draws = draws[0]
    # 5 standard errors: SE(mean) = sigma / sqrt(n), SE(sample std) ~ sigma / sqrt(2n).
    assert abs(draws.mean().item() - mean) < 5 * std / math.sqrt(N_DRAWS)
    assert abs(draws.std().item() - std) < 5 * std / math.sqrt(2 * N_DRAWS)


def test_sample_shape_and_dtype():
    mean = torch.zeros(4, 3, dtype=torch.float64)
    sample = MeanFieldNormal().sample((mean, mean))
    assert sample.shape == (4, 3)
    assert sample.dtype == torch.float64


@pytest.mark.parametrize("constants", [True, False])
def test_sample_and_log_prob_matches_log_prob(constants):
    dist = MeanFieldNormal()
    mean, log_std = torch.randn(2, 1000)
    use_norm_constants(constants)
    sample, log_prob = dist.sample_and_log_prob((mean, log_std))
    expected = dist.log_prob(sample, (mean, log_std)).sum()
    torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("method", ["sample", "sample_and_log_prob"])
def test_samples_are_reparameterised(method):
    mean = torch.randn(50, requires_grad=True)
    log_std = torch.randn(50, requires_grad=True)
    sample = getattr(MeanFieldNormal(), method)((mean, log_std))
    if method == "sample_and_log_prob":
        sample = sample[0]
    sample.sum().backward()
    # w = mu + exp(s) * eps: dw/dmu = 1, dw/ds = exp(s) * eps = w - mu.
    torch.testing.assert_close(mean.grad, torch.ones(50))
    torch.testing.assert_close(log_std.grad, (sample - mean).detach())


# ---------------------------------------------------------------- predictive
@pytest.mark.parametrize("shape", [(4,), (4, 3), (4, 2, 5)])
@pytest.mark.parametrize("n_samples", [1, 6])
def test_sample_log_likelihood_matches_torch(shape, n_samples):
    std = 0.7
    samples = torch.randn(n_samples, *shape)
    target = torch.randn(shape)
    expected = td.Normal(samples, std).log_prob(target)
    expected = expected.flatten(start_dim=2).sum(-1) if expected.dim() > 2 else expected
    actual = MeanFieldNormal(std=std).sample_log_likelihood(target, samples)
    assert actual.shape == (n_samples, shape[0])
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected)


def test_log_prob_from_samples_is_log_mean_density():
    std = 0.5
    samples = torch.randn(8, 10, 2)
    target = torch.randn(10, 2)
    density = td.Normal(samples, std).log_prob(target).sum(-1).exp()  # (S, B)
    expected = density.mean(0).log()
    actual = MeanFieldNormal(std=std).log_prob_from_samples(target, samples)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("n_samples", [1, 5])
def test_predictive_parameters_from_samples(n_samples):
    std = 0.4
    samples = torch.randn(n_samples, 6, 3)
    mean, pred_std = MeanFieldNormal(std=std).predictive_parameters_from_samples(samples)
    torch.testing.assert_close(mean, samples.mean(0))
    torch.testing.assert_close(
        pred_std, torch.sqrt(samples.var(0, unbiased=False) + std**2)
    )
    assert torch.isfinite(pred_std).all()


def test_log_prob_from_parameters_takes_std():
    mean, std, target = torch.randn(6), torch.rand(6) + 0.5, torch.randn(6)
    actual = MeanFieldNormal().log_prob_from_parameters(target, (mean, std))
    torch.testing.assert_close(actual, td.Normal(mean, std).log_prob(target))


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_non_float_target_raises(dtype):
    target = torch.zeros(4, 2, dtype=dtype)
    with pytest.raises(TypeError, match="must be floating point"):
        MeanFieldNormal().sample_log_likelihood(target, torch.randn(3, 4, 2))


@pytest.mark.parametrize("target_shape", [(4,), (4, 3), (2, 4, 2), (5, 2)])
def test_wrong_target_shape_raises(target_shape):
    with pytest.raises(ShapeError, match="does not match"):
        MeanFieldNormal().sample_log_likelihood(
            torch.randn(target_shape), torch.randn(3, 4, 2)
        )


def test_non_tensor_target_raises():
    with pytest.raises(TypeError, match="must be a Tensor"):
        MeanFieldNormal().sample_log_likelihood([0.0, 1.0], torch.randn(3, 2))


def test_zero_dim_samples_raise():
    with pytest.raises(ShapeError, match="leading sample dimension"):
        MeanFieldNormal().sample_log_likelihood(torch.tensor(0.0), torch.tensor(1.0))


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std": 0.0}, "std must be positive and finite"),
        ({"std": -1.0}, "std must be positive and finite"),
        ({"std": float("nan")}, "std must be positive and finite"),
        ({"std": float("inf")}, "std must be positive and finite"),
        ({"mean": float("inf")}, "mean must be finite"),
        ({"mean": float("nan")}, "mean must be finite"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MeanFieldNormal(**kwargs)


@pytest.mark.parametrize("kwargs", [{"std": "1"}, {"mean": None}, {"std": True}])
def test_non_numeric_hyperparameters_raise(kwargs):
    with pytest.raises(TypeError, match="must be a number"):
        MeanFieldNormal(**kwargs)


def test_hyperparameters_stored():
    dist = MeanFieldNormal(mean=0.5, std=torch.tensor(2.0))
    torch.testing.assert_close(dist.mean, torch.tensor(0.5))
    torch.testing.assert_close(dist.log_std, torch.tensor(math.log(2.0)))
    torch.testing.assert_close(dist.std, torch.tensor(2.0))
    assert repr(dist) == "MeanFieldNormal(mean=0.5, std=2)"


def test_reset_parameters_to_prior():
    layer = VILinear(
        5, 3, prior=MeanFieldNormal(mean=0.3, std=0.2), prior_initialization=True
    )
    for variable in ("weight", "bias"):
        mean = getattr(layer, layer.variational_parameter_name(variable, "mean"))
        log_std = getattr(layer, layer.variational_parameter_name(variable, "log_std"))
        torch.testing.assert_close(mean.detach(), torch.full_like(mean, 0.3))
        torch.testing.assert_close(
            log_std.detach(), torch.full_like(log_std, math.log(0.2))
        )


@pytest.mark.parametrize("constants", [True, False])
@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (0.3, 0.2)])
def test_prior_log_prob_sum_matches_the_elementwise_sum(constants, mean, std):
    use_norm_constants(constants)
    prior = MeanFieldNormal(mean, std)
    sample = torch.randn(40, 30, dtype=torch.float64)
    expected = prior.prior_log_prob(sample).sum()
    torch.testing.assert_close(prior.prior_log_prob_sum(sample), expected)


def test_prior_log_prob_sum_gradcheck():
    prior = MeanFieldNormal(0.2, 0.7)
    sample = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(prior.prior_log_prob_sum, (sample,))


# ---------------------------------------------------------------- the fitted noise
def test_noise_is_fitted_unless_std_is_given():
    assert MeanFieldNormal().learn_noise
    assert MeanFieldNormal(mean=0.5).learn_noise
    assert not MeanFieldNormal(std=1.0).learn_noise
    assert not MeanFieldNormal(std=0.3).learn_noise
    assert not MeanFieldNormal(learn_noise=False).learn_noise
    assert MeanFieldNormal(std=0.3, learn_noise=True).learn_noise


def test_bad_learn_noise_raises():
    with pytest.raises(TypeError, match="MeanFieldNormal: learn_noise must be a bool"):
        MeanFieldNormal(learn_noise="yes")


def _loss_call(likelihood, samples, target, dataset_size=100):
    from torch_blue.vi import KullbackLeiblerLoss, VIReturn

    loss_fn = KullbackLeiblerLoss(likelihood, dataset_size=dataset_size)
    return loss_fn(VIReturn(samples, torch.zeros(samples.shape[0], 2)), target)


def test_first_training_batch_sets_the_noise_to_the_mean_squared_residual():
    likelihood = MeanFieldNormal()
    samples, target = torch.randn(4, 10, 2), torch.randn(10, 2)
    _loss_call(likelihood, samples, target)
    expected = (samples - target).square().mean().sqrt()
    torch.testing.assert_close(likelihood.std, expected)


def test_later_batches_enter_a_running_mean_weighted_by_batch_over_dataset_size():
    likelihood = MeanFieldNormal()
    first, second = torch.randn(2, 20, 1), 3 * torch.randn(2, 20, 1)
    target = torch.zeros(20, 1)
    _loss_call(likelihood, first, target, dataset_size=80)
    _loss_call(likelihood, second, target, dataset_size=80)
    weight = 20 / 80
    expected = (1 - weight) * first.square().mean() + weight * second.square().mean()
    torch.testing.assert_close(likelihood.std.square(), expected)


def test_the_first_batch_is_scored_with_the_initial_noise():
    samples, target = torch.randn(3, 8, 1), torch.randn(8, 1)
    fitted = _loss_call(MeanFieldNormal(), samples, target)
    fixed = _loss_call(MeanFieldNormal(std=1.0), samples, target)
    torch.testing.assert_close(fitted, fixed)


def test_fixed_noise_and_evaluation_calls_leave_the_noise_alone():
    samples, target = torch.randn(3, 8, 1), torch.randn(8, 1)
    fixed = MeanFieldNormal(std=0.5)
    _loss_call(fixed, samples, target)
    assert fixed.std.item() == pytest.approx(0.5)
    fitted = MeanFieldNormal()
    with torch.no_grad():
        _loss_call(fitted, samples, target)
    assert fitted.std.item() == 1.0


def test_a_bad_target_raises_before_the_noise_changes():
    likelihood = MeanFieldNormal()
    with pytest.raises(ShapeError):
        _loss_call(likelihood, torch.randn(3, 8, 1), torch.randn(8, 2))
    assert likelihood.std.item() == 1.0


def test_the_fitted_noise_enters_the_predictive_parameters():
    likelihood = MeanFieldNormal()
    samples, target = torch.randn(4, 10, 1), torch.randn(10, 1)
    _loss_call(likelihood, samples, target)
    _, std = likelihood.predictive_parameters_from_samples(samples)
    expected = (samples.var(0, unbiased=False) + likelihood.std**2).sqrt()
    torch.testing.assert_close(std, expected)


def test_non_finite_outputs_keep_the_noise_fitted_so_far():
    likelihood = MeanFieldNormal()
    target = torch.zeros(8, 1)
    _loss_call(likelihood, torch.full((2, 8, 1), 0.5), target)
    _loss_call(likelihood, torch.full((2, 8, 1), float("nan")), target)
    assert likelihood.std.item() == pytest.approx(0.5)


def test_the_noise_keeps_float64_precision():
    likelihood = MeanFieldNormal()
    samples = torch.full((2, 4, 1), 1e-5, dtype=torch.float64)
    _loss_call(likelihood, samples, torch.zeros(4, 1, dtype=torch.float64))
    assert likelihood.log_std.dtype == torch.float64
    assert likelihood.std.item() == pytest.approx(1e-5, rel=1e-12)


@pytest.mark.parametrize("std", [1e-300, 1e-20, 1e20, 1e300])
def test_std_outside_float32_is_rejected(std):
    # Validated in float64 but stored in float32, these became log_std = -inf / inf.
    with pytest.raises(ValueError, match="MeanFieldNormal: std must be positive and"):
        MeanFieldNormal(std=std)


@pytest.mark.parametrize("std", [1.1e-19, 1.8e19])
def test_std_at_the_float32_limits_gives_finite_log_probs(std):
    normal = MeanFieldNormal(std=std)
    assert torch.isfinite(normal.log_std)
    sample = torch.tensor([0.0, std])
    assert torch.isfinite(normal.prior_log_prob(sample)).all()


@pytest.mark.parametrize(
    ("eps", "message"),
    [(math.nan, "eps must be finite"), (-1.0, "eps must be non-negative"),
     (math.inf, "eps must be finite"), ("1", "eps must be a number")],
)  # fmt: skip
def test_invalid_eps_is_rejected(eps, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MeanFieldNormal(eps=eps)
