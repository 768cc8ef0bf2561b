import copy
import io
import math
import pickle

import pytest
import torch
from torch import distributions as td
from torch import nn

from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    VILinear,
    VISequential,
    convert_to_vimodule,
    moped,
)
from torch_blue.vi.distributions import (
    Categorical,
    EmpiricalNormalPrior,
    MeanFieldNormal,
    MeanFieldStudentT,
    NonBayesian,
    RadialNormal,
    has_closed_form_kl,
    kl_divergence,
)
from torch_blue.vi.utils import NoVariablesError, ShapeError, norm_constants


def _trained():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def _vi_model():
    return VISequential(VILinear(4, 6), nn.ReLU(), VILinear(6, 3))


# ---------------------------------------------------------------- EmpiricalNormalPrior
def test_log_prob_matches_torch_per_element():
    mean, std = torch.randn(3, 4), torch.rand(3, 4) + 0.1
    sample = torch.randn(3, 4)
    prior = EmpiricalNormalPrior(mean, std)
    expected = td.Normal(mean, std).log_prob(sample)
    torch.testing.assert_close(prior.prior_log_prob(sample), expected)
    with norm_constants(False):
        shifted = prior.prior_log_prob(sample)
    torch.testing.assert_close(shifted, expected + 0.5 * math.log(2 * math.pi))


def test_broadcasting_hyperparameters():
    prior = EmpiricalNormalPrior(torch.zeros(3, 1), torch.tensor(0.5))
    sample = torch.randn(3, 4)
    expected = td.Normal(0.0, 0.5).log_prob(sample)
    torch.testing.assert_close(prior.prior_log_prob(sample), expected)


def test_log_prob_gradcheck():
    sample, mean, log_std = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    prior = EmpiricalNormalPrior(torch.zeros(5), torch.ones(5))
    assert torch.autograd.gradcheck(
        lambda x, m, s: prior.log_prob(x, (m, s)), (sample, mean, log_std)
    )


def test_not_rescaled():
    layer = VILinear(
        4,
        2,
        prior=(
            EmpiricalNormalPrior(torch.ones(2, 4), torch.ones(2, 4)),
            EmpiricalNormalPrior(torch.ones(2), torch.ones(2)),
        ),
        rescale_prior=True,
    )
    torch.testing.assert_close(layer.prior["weight"].std, torch.ones(2, 4))


@pytest.mark.parametrize(
    ("mean", "std", "error", "match"),
    [
        (
            torch.zeros(2),
            torch.tensor([1.0, 0.0]),
            ValueError,
            r"std must be positive.*0.0",
        ),
        (torch.zeros(2), torch.tensor([1.0, -2.0]), ValueError, r"got -2.0"),
        (
            torch.zeros(2),
            torch.tensor([math.nan, 1.0]),
            ValueError,
            r"std must be positive",
        ),
        (torch.tensor([0.0, math.inf]), torch.ones(2), ValueError, r"mean must be finite"),
        (torch.zeros(2), torch.ones(3), ShapeError, r"do not broadcast"),
    ],
)
def test_invalid_hyperparameters_raise(mean, std, error, match):
    with pytest.raises(error, match=match):
        EmpiricalNormalPrior(mean, std)


def test_attach_stores_buffers_on_the_layer():
    layer = VILinear(3, 2)
    prior = EmpiricalNormalPrior(torch.ones(2, 3), torch.full((2, 3), 0.5))
    prior.attach(layer, "weight")
    assert layer.prior["weight"] is prior
    assert prior.mean is layer._weight_prior_mean
    torch.testing.assert_close(
        layer._weight_prior_log_std, torch.full((2, 3), math.log(0.5))
    )
    assert repr(prior) == "EmpiricalNormalPrior(shape=(2, 3), attached)"


def test_attached_prior_follows_to_and_deepcopy():
    layer = VILinear(3, 2)
    EmpiricalNormalPrior(torch.ones(2, 3), torch.ones(2, 3)).attach(layer, "weight")
    layer.to(torch.float64)
    assert layer.prior["weight"].mean.dtype == torch.float64
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        with torch.no_grad():
            clone._weight_prior_mean.fill_(7.0)
        assert clone.prior["weight"].mean[0, 0].item() == 7.0
        assert layer.prior["weight"].mean[0, 0].item() == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attached_prior_moves_to_cuda():
    layer = VILinear(3, 2)
    EmpiricalNormalPrior(torch.ones(2, 3), torch.ones(2, 3)).attach(layer, "weight")
    layer.cuda()
    assert layer.prior["weight"].mean.is_cuda
    out = layer(torch.randn(4, 3, device="cuda"), samples=2)
    assert out.log_probs.is_cuda


def test_unattached_prior_moves_its_tensors_at_use():
    layer = VILinear(3, 2, dtype=torch.float64)
    prior = EmpiricalNormalPrior(torch.zeros(2, 3), torch.ones(2, 3))
    layer.prior["weight"] = prior
    out = layer(torch.randn(4, 3, dtype=torch.float64), samples=2)
    assert out.log_probs.dtype == torch.float64


@pytest.mark.parametrize(
    ("module", "variable", "error", "match"),
    [
        (nn.Linear(3, 2), "weight", TypeError, "module must be a VIModule"),
        (
            VILinear(3, 2, bias=False),
            "bias",
            NoVariablesError,
            "'bias' of VILinear is None",
        ),
        (VILinear(3, 2), "other", NoVariablesError, "no random variable 'other'"),
        (
            VILinear(3, 4),
            "weight",
            ShapeError,
            r"mean of shape \(2, 3\) does not broadcast",
        ),
    ],
)
def test_attach_rejects_bad_targets(module, variable, error, match):
    prior = EmpiricalNormalPrior(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(error, match=match):
        prior.attach(module, variable)


# ---------------------------------------------------------------- moped
def test_moped_from_a_trained_module():
    trained, model = _trained(), _vi_model()
    moped(model, trained, delta=0.2)
    for index in (0, 2):
        for variable in ("weight", "bias"):
            weight = getattr(trained[index], variable).detach()
            layer = model[index]
            prior = layer.prior[variable]
            assert isinstance(prior, EmpiricalNormalPrior)
            torch.testing.assert_close(prior.mean, weight)
            torch.testing.assert_close(prior.std, (0.2 * weight.abs()).clamp_min(1e-6))
            mean, log_std = layer.get_variational_parameters(variable)
            torch.testing.assert_close(mean, weight)
            torch.testing.assert_close(log_std, prior.log_std)


def test_moped_from_a_state_dict_and_from_current_means():
    trained = _trained()
    from_state = moped(_vi_model(), trained.state_dict())
    converted = convert_to_vimodule(_trained(), keep_weights=True)
    from_means = moped(converted)
    for a, b in zip(from_state.state_dict().values(), from_means.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_moped_without_initialize_keeps_the_variational_parameters():
    model = _vi_model()
    before = [p.clone() for p in model.parameters()]
    moped(model, _trained(), initialize=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_moped_floors_the_std_of_zero_weights():
    trained = _trained()
    with torch.no_grad():
        trained[0].bias.zero_()
    model = moped(_vi_model(), trained, min_std=1e-4)
    torch.testing.assert_close(model[0].prior["bias"].std, torch.full((6,), 1e-4))


def test_moped_sets_log_scale_of_a_student_t():
    model = VILinear(4, 6, variational_distribution=MeanFieldStudentT())
    moped(model, _trained()[0], delta=0.5)
    torch.testing.assert_close(model._weight_log_scale, model.prior["weight"].log_std)


def test_moped_with_a_point_estimate_sets_only_the_mean():
    model = VILinear(4, 6, variational_distribution=NonBayesian())
    trained = _trained()[0]
    moped(model, trained)
    torch.testing.assert_close(model._weight_mean, trained.weight.detach())


def test_checkpoint_round_trip():
    model = moped(_vi_model(), _trained())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = moped(_vi_model())  # creates the buffers, with other values
    fresh.load_state_dict(state)
    for variable in ("weight", "bias"):
        torch.testing.assert_close(
            fresh[2].prior[variable].mean, model[2].prior[variable].mean
        )


def test_moped_model_samples_and_trains_with_the_closed_form_kl():
    model = moped(_vi_model(), _trained())
    out = model(torch.randn(5, 4), samples=4)
    assert torch.isfinite(out.log_probs).all()
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), dataset_size=100)
    assert loss_fn.monte_carlo_variables == []
    # Right after MOPED the variational distribution equals the prior: KL = 0.
    torch.testing.assert_close(loss_fn.prior_matching(), torch.tensor(0.0))
    loss_fn(out, torch.randint(0, 3, (5,))).backward()
    assert model[0]._weight_mean.grad is not None


def test_closed_form_kl_matches_torch():
    prior = EmpiricalNormalPrior(torch.randn(3, 4), torch.rand(3, 4) + 0.1)
    mean, log_std = torch.randn(3, 4), 0.3 * torch.randn(3, 4)
    assert has_closed_form_kl(prior, MeanFieldNormal())
    assert has_closed_form_kl(prior, RadialNormal())
    expected = td.kl_divergence(
        td.Normal(mean, log_std.exp()), td.Normal(prior.mean, prior.std)
    ).sum()
    torch.testing.assert_close(
        kl_divergence(prior, MeanFieldNormal(), (mean, log_std)), expected
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"delta": 0.0}, ValueError, r"moped: delta must be positive and finite, got 0.0"),
        ({"min_std": -1.0}, ValueError, r"moped: min_std must be positive and finite"),
        ({"weights": [1.0]}, TypeError, r"moped: weights must be an nn.Module, a state"),
        ({"weights": {"0.weight": torch.zeros(6, 4)}}, KeyError, r"0.bias.*2.weight"),
        (
            {"weights": nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3))},
            ShapeError,
            r"'0.weight' has shape \(7, 4\).*\(6, 4\)",
        ),
    ],
)
def test_moped_rejects_bad_arguments(kwargs, error, match):
    model = _vi_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        moped(model, **kwargs)
    assert model.state_dict().keys() == before.keys()  # nothing attached on failure


def test_the_old_path_of_moped_warns_and_gives_the_same_function():
    import torch_blue.vi.distributions as distributions

    with pytest.warns(DeprecationWarning, match="moved to torch_blue.vi.moped"):
        old = distributions.moped
    assert old is moped
