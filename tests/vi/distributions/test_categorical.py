import math

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from torch_blue.vi.distributions import Categorical
from torch_blue.vi.utils import ShapeError

S, B, C = 5, 8, 4


def _cross_entropy(logits, target):
    # Per-sample cross entropy of (S, B, ..., C) logits, summed over dims after B.
    n_samples, n_classes = logits.shape[0], logits.shape[-1]
    expanded = target.expand(logits.shape[:-1])
    ce = F.cross_entropy(
        logits.reshape(-1, n_classes), expanded.reshape(-1), reduction="none"
    ).reshape(logits.shape[:-1])
    return ce.reshape(n_samples, target.shape[0], -1).sum(-1)


@pytest.mark.parametrize("extra", [(), (3,), (2, 3)])
def test_sample_log_likelihood_is_negative_cross_entropy(extra):
    logits = torch.randn(S, B, *extra, C) * 3
    target = torch.randint(0, C, (B, *extra))
    actual = Categorical().sample_log_likelihood(target, logits)
    assert actual.shape == (S, B)
    torch.testing.assert_close(actual, -_cross_entropy(logits, target))


def test_sample_log_likelihood_zero_dim_target():
    logits = torch.randn(S, C)
    target = torch.tensor(2)
    actual = Categorical().sample_log_likelihood(target, logits)
    torch.testing.assert_close(actual, F.log_softmax(logits, -1)[:, 2])


def test_log_prob_from_samples_is_log_mean_probability():
    logits = torch.randn(S, B, C) * 3
    target = torch.randint(0, C, (B,))
    mean_probs = F.softmax(logits, -1).mean(0)  # (B, C)
    expected = mean_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1).log()
    actual = Categorical().log_prob_from_samples(target, logits)
    torch.testing.assert_close(actual, expected)
    # Not the average log-probability: Jensen makes that strictly smaller here.
    assert (actual > -_cross_entropy(logits, target).mean(0)).all()


def test_probs_input_type():
    eps = 1e-5
    probs = F.softmax(torch.randn(S, B, C), -1) * 2.5  # unnormalised on purpose
    target = torch.randint(0, C, (B,))
    normalised = probs / probs.sum(-1, keepdim=True)
    picked = normalised.gather(-1, target.expand(S, B).unsqueeze(-1)).squeeze(-1)
    dist = Categorical(input_type="probs", eps=eps)
    torch.testing.assert_close(
        dist.sample_log_likelihood(target, probs), torch.log(picked + eps)
    )
    torch.testing.assert_close(
        dist.log_prob_from_samples(target, probs), torch.log(picked.mean(0) + eps)
    )
    (mean_probs,) = dist.predictive_parameters_from_samples(probs)
    torch.testing.assert_close(mean_probs, normalised.mean(0))


def test_predictive_parameters_average_softmax():
    logits = torch.randn(S, B, C)
    (probs,) = Categorical().predictive_parameters_from_samples(logits)
    torch.testing.assert_close(probs, F.softmax(logits, -1).mean(0))
    torch.testing.assert_close(probs.sum(-1), torch.ones(B))


def test_log_prob_from_parameters_agrees_with_samples():
    eps = 1e-5
    logits = torch.randn(S, B, C)
    target = torch.randint(0, C, (B,))
    dist = Categorical(eps=eps)
    from_parameters = dist.log_prob_from_parameters(
        target, dist.predictive_parameters_from_samples(logits)
    )
    # From parameters: log(mean p + eps); from samples: log(mean p) exactly.
    from_samples = dist.log_prob_from_samples(target, logits)
    torch.testing.assert_close(from_parameters, torch.log(from_samples.exp() + eps))
    assert (from_parameters > from_samples).all()


def test_log_prob_broadcasts_shared_probabilities():
    probs = torch.tensor([0.1, 0.2, 0.7])
    target = torch.tensor([2, 0, 1, 2])
    actual = Categorical(eps=0.0).log_prob(target, (probs,))
    torch.testing.assert_close(actual, probs.log()[target])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_non_integer_target_raises(dtype):
    target = torch.zeros(B, dtype=dtype)
    with pytest.raises(TypeError, match="integer class indices"):
        Categorical().sample_log_likelihood(target, torch.randn(S, B, C))


def test_non_tensor_target_raises():
    with pytest.raises(TypeError, match="must be a Tensor"):
        Categorical().sample_log_likelihood([0] * B, torch.randn(S, B, C))


@pytest.mark.parametrize("target_shape", [(B + 1,), (B, C), (S, B), ()])
def test_wrong_target_shape_raises(target_shape):
    target = torch.zeros(target_shape, dtype=torch.long)
    with pytest.raises(ShapeError, match="does not match"):
        Categorical().sample_log_likelihood(target, torch.randn(S, B, C))


def test_one_dim_samples_raise():
    with pytest.raises(ShapeError, match="does not match"):
        Categorical().sample_log_likelihood(torch.tensor(0), torch.randn(C))


@pytest.mark.parametrize("input_type", ["log_probs", "Logits", None])
def test_invalid_input_type_raises(input_type):
    with pytest.raises(ValueError, match="input_type must be 'logits' or 'probs'"):
        Categorical(input_type=input_type)


def test_log_prob_from_samples_single_sample_equals_log_softmax():
    logits = torch.randn(1, B, C)
    target = torch.randint(0, C, (B,))
    expected = F.log_softmax(logits[0], -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    actual = Categorical().log_prob_from_samples(target, logits)
    torch.testing.assert_close(actual, expected)
    assert math.isfinite(actual.sum().item())


@pytest.mark.parametrize("bad", [3, 7, -1, -100])
def test_out_of_range_targets_are_rejected(bad):
    # They reached gather ("index 7 is out of bounds"); -100 is not ignored either.
    target = torch.tensor([0, bad])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\] for 3 classes"):
        Categorical().log_prob_from_samples(target, torch.randn(2, 2, 3))


def test_probability_outputs_are_validated():
    probs = Categorical(input_type="probs")
    target = torch.tensor([1])
    with pytest.raises(ValueError, match=r"must be probabilities \(non-negative\)"):
        probs.log_prob_from_samples(target, torch.tensor([[[0.5, -0.1, 0.6]]]))
    with pytest.raises(ValueError, match="all zero over the 3 classes"):
        probs.log_prob_from_samples(target, torch.zeros(1, 1, 3))
    # unnormalised non-negative outputs are renormalised, as documented
    got = probs.log_prob_from_samples(target, torch.tensor([[[1.0, 2.0, 1.0]]]))
    torch.testing.assert_close(got, torch.log(torch.tensor([0.5 + 1e-5])))
    with pytest.raises(ValueError, match="eps must be non-negative"):
        Categorical(eps=-1)
