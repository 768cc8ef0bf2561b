import pytest
import torch
from torch import nn

from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    KullbackLeiblerLoss,
    NonBayesianDivergence,
    NormalNormalDivergence,
    UniformNormalDivergence,
    VILinear,
    VISequential,
)
from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    MeanFieldNormal,
    NonBayesian,
    UniformPrior,
)
from torch_blue.vi.utils import NoVariablesError, UnsupportedDistributionError


def _model(**kwargs):
    return VISequential(VILinear(3, 5, **kwargs), nn.ReLU(), VILinear(5, 2, **kwargs))


def _reference_kl(model):
    total = 0.0
    for module in model.modules():
        if isinstance(module, VILinear):
            for variable in ("weight", "bias"):
                mean, log_std = module.get_variational_parameters(variable)
                prior = module.prior[variable]
                total = (
                    total
                    + torch.distributions.kl_divergence(
                        torch.distributions.Normal(mean, log_std.exp()),
                        torch.distributions.Normal(prior.mean, prior.std),
                    ).sum()
                )
    return total


def test_prior_matching_is_the_closed_form_kl():
    model = _model(prior=MeanFieldNormal(0.1, 0.5))
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 100)
    assert torch.allclose(loss_fn.prior_matching(), _reference_kl(model), atol=1e-4)


def test_monte_carlo_kl_agrees_with_closed_form_within_standard_error():
    torch.manual_seed(0)
    model = _model(prior=MeanFieldNormal(0.0, 0.3))
    out = model(torch.randn(1, 3), samples=20_000)
    per_draw = (out.log_probs[:, 1] - out.log_probs[:, 0]).detach()
    standard_error = per_draw.std() / len(per_draw) ** 0.5
    exact = AnalyticalKullbackLeiblerLoss(model, Categorical(), 1).prior_matching()
    assert abs(per_draw.mean() - exact) < 5 * standard_error


def test_both_losses_share_the_data_term():
    torch.manual_seed(0)
    model = _model()
    out = model(torch.randn(6, 3), samples=4)
    target = torch.randint(0, 2, (6,))
    mc = KullbackLeiblerLoss(Categorical(), 10, heat=0.0)(out, target)
    exact = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10, heat=0.0)(out, target)
    assert torch.allclose(mc, exact)


def test_works_with_plain_outputs_and_leaves_the_model_alone():
    model = _model(return_log_probs=False)
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
    assert model.return_log_probs is False
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}
    assert loss_fn.model is model
    out = model(torch.randn(6, 3), samples=2)
    loss = loss_fn(out.as_plain(), torch.randint(0, 2, (6,)))
    loss.backward()
    assert model[0]._weight_log_std.grad is not None


def test_uniform_prior_gives_negative_entropy():
    model = VILinear(3, 2, prior=UniformPrior())
    exact = AnalyticalKullbackLeiblerLoss(model, Categorical(), 1).prior_matching()
    entropy = sum(
        torch.distributions.Normal(m, s.exp()).entropy().sum()
        for m, s in (model.get_variational_parameters(v) for v in ("weight", "bias"))
    )
    assert torch.allclose(exact, -entropy, atol=1e-4)


def test_non_bayesian_variables_contribute_zero():
    model = VILinear(3, 2, variational_distribution=NonBayesian())
    exact = AnalyticalKullbackLeiblerLoss(model, Categorical(), 1).prior_matching()
    assert exact.item() == 0.0


def test_forced_divergence_type():
    model = VILinear(3, 2)
    forced = AnalyticalKullbackLeiblerLoss(
        model, Categorical(), 1, NormalNormalDivergence()
    )
    looked_up = AnalyticalKullbackLeiblerLoss(model, Categorical(), 1)
    assert torch.allclose(forced.prior_matching(), looked_up.prior_matching())
    assert isinstance(forced.kl_module, NormalNormalDivergence)


def test_upstream_divergence_modules():
    mean, log_std = torch.zeros(3), torch.zeros(3)
    assert NonBayesianDivergence()([mean], [mean]).item() == 0.0
    assert UniformNormalDivergence()([None], [mean, log_std]).shape == ()
    assert NormalNormalDivergence()([0.0, 0.0], [mean, log_std]).item() == pytest.approx(
        0.0
    )


def test_pair_without_closed_form_raises_at_construction():
    model = VILinear(3, 2, prior=BasicQuietPrior())
    with pytest.raises(
        UnsupportedDistributionError, match=r"no closed-form KL .*BasicQuietPrior"
    ):
        AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)


def test_model_without_variables_raises():
    with pytest.raises(NoVariablesError, match="no random variables"):
        AnalyticalKullbackLeiblerLoss(nn.Linear(2, 2), Categorical(), 10)


def test_bad_divergence_type_raises():
    with pytest.raises(TypeError, match="divergence_type must be a KullbackLeiblerModule"):
        AnalyticalKullbackLeiblerLoss(VILinear(2, 2), Categorical(), 10, "normal")


def test_missing_dataset_size_raises():
    model = VILinear(3, 2)
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical())
    with pytest.raises(ValueError, match="dataset_size"):
        loss_fn(model(torch.randn(4, 3), samples=2), torch.zeros(4).long())
