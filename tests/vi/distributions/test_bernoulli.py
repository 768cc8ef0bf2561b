import math

import pytest
import torch
from torch import distributions as td
from torch.nn import functional as F  # noqa: N812

from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    KullbackLeiblerLoss,
    VILinear,
    VIReturn,
)
from torch_blue.vi.distributions import Bernoulli
from torch_blue.vi.utils import ShapeError

S, B = 5, 8


def _per_sample_sum(log_p):
    return log_p.flatten(start_dim=2).sum(-1) if log_p.dim() > 2 else log_p


# ---------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("shape", [(B,), (B, 1), (B, 3), (B, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.long, torch.bool])
@pytest.mark.parametrize("n_samples", [1, S])
def test_logits_log_likelihood_matches_torch(shape, dtype, n_samples):
    logits = torch.randn(n_samples, *shape) * 3
    target = torch.randint(0, 2, shape).to(dtype)
    actual = Bernoulli().sample_log_likelihood(target, logits)
    expected = td.Bernoulli(logits=logits).log_prob(target.float())
    assert actual.shape == (n_samples, B)
    torch.testing.assert_close(actual, _per_sample_sum(expected))


def test_probs_log_likelihood_matches_torch():
    probs = torch.rand(S, B, 3) * 0.98 + 0.01
    target = torch.randint(0, 2, (B, 3))
    actual = Bernoulli("probs", eps=0.0).sample_log_likelihood(target, probs)
    expected = td.Bernoulli(probs=probs).log_prob(target.float()).sum(-1)
    torch.testing.assert_close(actual, expected)


def test_probs_eps_keeps_certain_mistakes_finite():
    probs = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    actual = Bernoulli("probs", eps=1e-5).sample_log_likelihood(target, probs)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, torch.full((1, 2), 1e-5).log().double())


def test_soft_labels_are_negative_binary_cross_entropy():
    logits, target = torch.randn(S, B), torch.rand(B)
    expected = torch.stack(
        [
            -F.binary_cross_entropy_with_logits(logits[s], target, reduction="none")
            for s in range(S)
        ]
    )
    torch.testing.assert_close(Bernoulli().sample_log_likelihood(target, logits), expected)


def test_trailing_output_dimension_of_one_may_be_left_out_of_the_target():
    logits, target = torch.randn(S, B, 1), torch.randint(0, 2, (B,))
    dist = Bernoulli()
    expected = dist.sample_log_likelihood(target.unsqueeze(-1), logits)
    torch.testing.assert_close(dist.sample_log_likelihood(target, logits), expected)
    scalar = dist.sample_log_likelihood(target[0], logits[:, 0])
    torch.testing.assert_close(scalar, expected[:, 0])


@pytest.mark.parametrize("input_type", ["logits", "probs"])
def test_sample_log_likelihood_gradcheck(input_type):
    output = torch.randn(3, 4, 2, dtype=torch.float64)
    if input_type == "probs":
        output = output.sigmoid() * 0.8 + 0.1
    output.requires_grad_()
    target = torch.randint(0, 2, (4, 2)).double()
    dist = Bernoulli(input_type)
    assert torch.autograd.gradcheck(
        lambda out: dist.sample_log_likelihood(target, out), (output,)
    )


# ---------------------------------------------------------------- predictive parameters
def test_predictive_parameters_are_hand_computed_mean_probabilities():
    # Logits 0 and log(3): probabilities 1/2 and 3/4, mean 5/8.
    logits = torch.tensor([[0.0], [math.log(3.0)]])
    (probs,) = Bernoulli().predictive_parameters_from_samples(logits)
    torch.testing.assert_close(probs, torch.tensor([0.625]))


def test_log_prob_from_samples_is_log_mean_probability():
    logits, target = torch.randn(S, B, 1) * 3, torch.randint(0, 2, (B,))
    p_one = logits.sigmoid().squeeze(-1)
    picked = torch.where(target.bool(), p_one, 1 - p_one)  # (S, B)
    actual = Bernoulli().log_prob_from_samples(target, logits)
    torch.testing.assert_close(actual, picked.mean(0).log())


def test_log_prob_from_parameters_matches_targets_without_trailing_dim():
    logits, target = torch.randn(S, B, 1), torch.randint(0, 2, (B,))
    dist = Bernoulli(eps=0.0)
    params = dist.predictive_parameters_from_samples(logits)
    actual = dist.log_prob_from_parameters(target, params)
    assert actual.shape == (B,)  # not broadcast to (B, B)
    expected = td.Bernoulli(probs=params[0].squeeze(-1)).log_prob(target.float())
    torch.testing.assert_close(actual, expected)


# ---------------------------------------------------------------- with the losses
@pytest.mark.parametrize("objective", ["elbo", "log_mean_predictive"])
@pytest.mark.parametrize("n_samples", [1, 4])
@pytest.mark.parametrize("loss_type", ["mc", "analytical"])
def test_usable_with_the_losses(objective, n_samples, loss_type):
    model = VILinear(3, 1, return_log_probs=loss_type == "mc")
    if loss_type == "mc":
        loss_fn = KullbackLeiblerLoss(Bernoulli(), 50, objective=objective)
    else:
        loss_fn = AnalyticalKullbackLeiblerLoss(model, Bernoulli(), 50, objective=objective)
    target = torch.randint(0, 2, (8,)).float()
    loss = loss_fn(model(torch.randn(8, 3), samples=n_samples), target)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(("reduction", "factor"), [("mean", 1), ("sum", 100)])
def test_elbo_data_term_is_bce_per_example_or_dataset_size_times(reduction, factor):
    out = torch.randn(4, B, 1)
    target = torch.randint(0, 2, (B,)).float()
    loss = KullbackLeiblerLoss(Bernoulli(), 100, heat=0.0, reduction=reduction)(
        VIReturn(out, torch.zeros(4, 2)), target
    )
    bce = F.binary_cross_entropy_with_logits(out.squeeze(-1), target.expand(4, B))
    torch.testing.assert_close(loss, factor * bce)


def test_training_separates_a_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(400, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = VILinear(2, 1)
    loss_fn = KullbackLeiblerLoss(Bernoulli(), dataset_size=400)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        loss_fn(model(x, samples=4), y).backward()
        optimizer.step()
    model.return_log_probs = False
    with torch.no_grad():
        (probs,) = Bernoulli().predictive_parameters_from_samples(model(x, samples=32))
    accuracy = ((probs.squeeze(-1) > 0.5).long() == y).float().mean()
    # Only points within the posterior's spread of the boundary can be wrong.
    assert accuracy > 0.95


# ---------------------------------------------------------------- errors and repr
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_type": "log_probs"}, ValueError, "input_type must be 'logits' or 'probs'"),
        ({"input_type": None}, ValueError, "input_type must be 'logits' or 'probs'"),
        ({"eps": -1e-3}, ValueError, "eps must be non-negative"),
        ({"eps": float("nan")}, ValueError, "eps must be finite"),
        ({"eps": "0"}, TypeError, "eps must be a number"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, match):
    with pytest.raises(error, match=f"Bernoulli: {match}"):
        Bernoulli(**kwargs)


def test_complex_target_raises():
    with pytest.raises(TypeError, match="Bernoulli: targets must be 0/1 labels"):
        Bernoulli().sample_log_likelihood(
            torch.zeros(B, dtype=torch.cfloat), torch.randn(S, B)
        )


@pytest.mark.parametrize(
    "target",
    [torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.5, 0.0]), torch.tensor([-1.0, 0, 1])],
)
def test_out_of_range_target_raises(target):
    with pytest.raises(
        ValueError, match=r"Bernoulli: targets must be 0/1 labels .* \[0, 1\]"
    ):
        Bernoulli().sample_log_likelihood(target, torch.randn(S, 3))


def test_non_tensor_target_raises():
    with pytest.raises(TypeError, match="must be a Tensor"):
        Bernoulli().sample_log_likelihood([0, 1], torch.randn(S, 2))


@pytest.mark.parametrize(
    ("output_shape", "target_shape"),
    [((S, B), (B, 1)), ((S, B, 2), (B,)), ((S, B, 1), (B + 1,)), ((S, B), (S, B))],
)
def test_wrong_target_shape_raises(output_shape, target_shape):
    with pytest.raises(ShapeError, match=r"Bernoulli: target shape .* expected"):
        Bernoulli().sample_log_likelihood(
            torch.zeros(target_shape), torch.randn(output_shape)
        )


def test_repr():
    assert repr(Bernoulli()) == "Bernoulli(input_type='logits')"
    assert repr(Bernoulli("probs")) == "Bernoulli(input_type='probs')"


def test_probability_outputs_outside_the_unit_interval_are_rejected():
    likelihood = Bernoulli(input_type="probs")
    target = torch.tensor([1.0])
    for bad in (1.5, -0.5):
        with pytest.raises(ValueError, match=r"must be probabilities in \[0, 1\]"):
            likelihood.log_prob_from_samples(target, torch.tensor([[0.5], [bad]]))
    ok = likelihood.log_prob_from_samples(target, torch.tensor([[0.0], [1.0]]))
    assert torch.isfinite(ok).all()
