import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from torch_blue.vi import KullbackLeiblerLoss, VILinear, VIReturn, VISequential
from torch_blue.vi.distributions import Categorical, MeanFieldNormal, NonBayesian
from torch_blue.vi.utils import MissingLogProbsError, UnsupportedDistributionError


def _output(samples=4, batch=6, classes=3, log_probs=True):
    data = torch.randn(samples, batch, classes, requires_grad=True)
    lp = torch.randn(samples, 2) if log_probs else None
    return VIReturn(data, lp)


def test_elbo_per_example_is_mean_nll_plus_kl_estimate_over_dataset_size():
    out = _output()
    target = torch.randint(0, 3, (6,))
    loss = KullbackLeiblerLoss(Categorical(), dataset_size=1000)(out, target)
    nll = torch.stack([F.cross_entropy(out.as_plain()[s], target) for s in range(4)]).mean()
    kl = (out.log_probs[:, 1] - out.log_probs[:, 0]).mean()
    assert torch.allclose(loss, nll + kl / 1000)


def test_sum_reduction_is_the_full_data_negative_elbo():
    out = _output()
    target = torch.randint(0, 3, (6,))
    loss = KullbackLeiblerLoss(Categorical(), 1000, reduction="sum")(out, target)
    nll = torch.stack([F.cross_entropy(out.as_plain()[s], target) for s in range(4)]).mean()
    kl = (out.log_probs[:, 1] - out.log_probs[:, 0]).mean()
    assert torch.allclose(loss, 1000 * nll + kl)


@pytest.mark.parametrize("reduction", ["none", "batchmean", None])
def test_bad_reduction_raises(reduction):
    with pytest.raises(ValueError, match="KullbackLeiblerLoss: reduction must be one of"):
        KullbackLeiblerLoss(Categorical(), 10, reduction=reduction)


def test_heat_scales_only_the_kl_term():
    out = _output()
    target = torch.randint(0, 3, (6,))
    cold = KullbackLeiblerLoss(Categorical(), 100, heat=0.1)(out, target)
    plain = KullbackLeiblerLoss(Categorical(), 100, heat=0.0)(out, target)
    kl = (out.log_probs[:, 1] - out.log_probs[:, 0]).mean()
    assert torch.allclose(cold - plain, 0.1 * kl / 100, atol=1e-6)


def test_log_mean_predictive_objective():
    out = _output()
    target = torch.randint(0, 3, (6,))
    loss_fn = KullbackLeiblerLoss(
        Categorical(), 50, heat=0.0, objective="log_mean_predictive"
    )
    probs = out.as_plain().softmax(-1).mean(0)
    expected = -torch.log(probs[torch.arange(6), target]).mean()
    assert torch.allclose(loss_fn(out, target), expected, atol=1e-4)


def test_log_mean_predictive_is_never_worse_than_the_elbo_data_term():
    # Jensen: log mean_s p_s >= mean_s log p_s.
    out = _output(samples=8)
    target = torch.randint(0, 3, (6,))
    elbo = KullbackLeiblerLoss(Categorical(), 10, heat=0.0)(out, target)
    lmp = KullbackLeiblerLoss(Categorical(), 10, heat=0.0, objective="log_mean_predictive")
    assert lmp(out, target) <= elbo + 1e-6


def test_normal_predictive_is_finite_with_one_sample():
    out = VIReturn(torch.randn(1, 6, 2), torch.zeros(1, 2))
    target = torch.randn(6, 2)
    for objective in ("elbo", "log_mean_predictive"):
        loss = KullbackLeiblerLoss(MeanFieldNormal(std=0.5), 10, objective=objective)
        value = loss(out, target)
        assert torch.isfinite(value)
    expected = (
        -torch.distributions.Normal(out.as_plain()[0], 0.5).log_prob(target).sum(-1).mean()
    )
    assert torch.allclose(
        KullbackLeiblerLoss(MeanFieldNormal(std=0.5), 10)(out, target), expected
    )


def test_dataset_size_in_forward_overrides():
    out = _output()
    target = torch.randint(0, 3, (6,))
    loss_fn = KullbackLeiblerLoss(Categorical(), heat=0.0, reduction="sum")
    assert torch.allclose(
        loss_fn(out, target, dataset_size=20), 2 * loss_fn(out, target, 10)
    )
    # Per example, the dataset size only scales the KL term.
    per_example = KullbackLeiblerLoss(Categorical(), 10)
    kl = (out.log_probs[:, 1] - out.log_probs[:, 0]).mean()
    assert torch.allclose(
        per_example(out, target) - per_example(out, target, dataset_size=20),
        kl / 10 - kl / 20,
    )


def test_missing_dataset_size_raises():
    with pytest.raises(ValueError, match=r"dataset_size .* is required"):
        KullbackLeiblerLoss(Categorical())(_output(), torch.randint(0, 3, (6,)))


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_dataset_size_raises(size):
    with pytest.raises(ValueError, match="dataset_size must be a positive int"):
        KullbackLeiblerLoss(Categorical(), size)


def test_plain_tensor_raises_missing_log_probs():
    match = r"plain Tensor.*return_log_probs = True"
    with pytest.raises(MissingLogProbsError, match=match):
        KullbackLeiblerLoss(Categorical(), 10)(torch.randn(4, 6, 3), torch.zeros(6).long())


def test_vireturn_without_log_probs_raises():
    with pytest.raises(MissingLogProbsError, match="VIReturn without log_probs"):
        KullbackLeiblerLoss(Categorical(), 10)(
            _output(log_probs=False), torch.zeros(6).long()
        )


def test_not_a_predictive_distribution_raises():
    from torch_blue.vi.distributions import UniformPrior

    with pytest.raises(UnsupportedDistributionError, match="UniformPrior cannot be used"):
        KullbackLeiblerLoss(UniformPrior(), 10)


@pytest.mark.parametrize(("heat", "error"), [(-1.0, ValueError), (math.inf, ValueError),
                                             ("1", TypeError)])  # fmt: skip
def test_bad_heat_raises(heat, error):
    with pytest.raises(error, match="heat must be"):
        KullbackLeiblerLoss(Categorical(), 10, heat=heat)


def test_bad_objective_raises():
    with pytest.raises(ValueError, match="objective must be one of"):
        KullbackLeiblerLoss(Categorical(), 10, objective="mean")


def test_wrong_target_dtype_and_shape_raise():
    loss_fn = KullbackLeiblerLoss(Categorical(), 10)
    with pytest.raises(TypeError, match="integer class indices"):
        loss_fn(_output(), torch.zeros(6))
    with pytest.raises(ValueError, match=r"target shape \(5,\) does not match"):
        loss_fn(_output(), torch.zeros(5).long())


def test_tracking_records_components():
    out = _output()
    target = torch.randint(0, 3, (6,))
    loss_fn = KullbackLeiblerLoss(Categorical(), 10, track=True)
    total = loss_fn(out, target)
    assert loss_fn.log["data_fitting"][0] + loss_fn.log["prior_matching"][
        0
    ] == pytest.approx(total.item(), rel=1e-5)
    loss_fn.track(False)
    loss_fn(out, target)
    assert len(loss_fn.log["data_fitting"]) == 1


def test_non_bayesian_predictive_reproduces_mse():
    out = VIReturn(torch.randn(3, 6, 2), torch.zeros(3, 2))
    target = torch.randn(6, 2)
    loss = KullbackLeiblerLoss(NonBayesian("MSE"), 1)(out, target)
    expected = torch.stack(
        [((out.as_plain()[s] - target) ** 2).sum(-1).mean() for s in range(3)]
    )
    assert torch.allclose(loss, expected.mean())


def test_loss_trains_a_classifier():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long()
    model = VISequential(VILinear(2, 16), nn.ReLU(), VILinear(16, 2))
    loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=200)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn(model(x, samples=4), y).backward()
        optimizer.step()
    model.return_log_probs = False
    with torch.no_grad():
        accuracy = (model(x, samples=32).softmax(-1).mean(0).argmax(-1) == y).float().mean()
    assert accuracy > 0.9


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [("heat", -1.0, ValueError), ("heat", math.nan, ValueError),
     ("heat", "1", TypeError), ("dataset_size", 0, ValueError),
     ("objective", "mse", ValueError), ("reduction", "none", ValueError)],
)  # fmt: skip
def test_settings_are_validated_when_assigned(setting, value, error):
    # The constructor rejected these; assignment afterwards silently accepted them.
    loss = KullbackLeiblerLoss(Categorical(), dataset_size=10)
    with pytest.raises(error, match=f"KullbackLeiblerLoss: {setting}"):
        setattr(loss, setting, value)
    loss.heat = 0.5
    assert loss.heat == 0.5


def test_numpy_integers_are_accepted_as_dataset_size():
    numpy = pytest.importorskip("numpy")
    loss = KullbackLeiblerLoss(Categorical(), dataset_size=numpy.int64(10))
    assert loss.dataset_size == 10 and type(loss.dataset_size) is int
