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
    LaplacePrior,
    MeanFieldNormal,
    NonBayesian,
    RadialNormal,
    ScaleMixtureNormalPrior,
    StudentTPrior,
    UniformPrior,
    register_kl,
)
from torch_blue.vi.distributions import kl as kl_module
from torch_blue.vi.distributions.kl import LaplaceNormalDivergence, kl_divergence
from torch_blue.vi.utils import NoVariablesError


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


def test_pair_without_closed_form_falls_back_to_monte_carlo():
    model = VILinear(3, 2, prior=BasicQuietPrior())
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
    assert loss_fn.monte_carlo_variables == ["weight", "bias"]
    loss = loss_fn(model(torch.randn(4, 3), samples=2), torch.zeros(4).long())
    loss.backward()
    assert model._weight_mean.grad is not None


def test_monte_carlo_kl_is_unbiased():
    torch.manual_seed(0)
    model = _model(prior=ScaleMixtureNormalPrior(0.5, 1.0, 0.1))
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 1)
    with torch.no_grad():
        estimates = torch.stack([loss_fn.prior_matching() for _ in range(2000)])
        reference = model(torch.randn(1, 3), samples=20_000).log_probs
    per_draw = reference[:, 1] - reference[:, 0]
    # 5 standard errors of the difference of two independent means.
    se = (estimates.var() / len(estimates) + per_draw.var() / len(per_draw)).sqrt()
    assert abs(estimates.mean() - per_draw.mean()) < 5 * se


def test_closed_form_and_monte_carlo_layers_mix():
    model = VISequential(
        VILinear(3, 5, prior=LaplacePrior()),
        nn.ReLU(),
        VILinear(5, 2, prior=StudentTPrior()),
    )
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10, kl_samples=3)
    assert loss_fn.monte_carlo_variables == ["2.weight", "2.bias"]
    loss_fn(model(torch.randn(4, 3), samples=2), torch.zeros(4).long()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_closed_forms_are_deterministic():
    for model in (
        VILinear(3, 2, prior=LaplacePrior(0.1, 0.5)),
        VILinear(3, 2, variational_distribution=RadialNormal(), prior=MeanFieldNormal()),
    ):
        loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
        assert loss_fn.monte_carlo_variables == []
        torch.testing.assert_close(loss_fn.prior_matching(), loss_fn.prior_matching())


def test_laplace_uses_its_closed_form():
    model = VILinear(3, 2, prior=LaplacePrior(0.1, 0.5))
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
    prior = model.prior["weight"]
    expected = sum(
        LaplaceNormalDivergence.forward(
            prior.loc, prior.log_scale, *model.get_variational_parameters(v)
        )
        for v in ("weight", "bias")
    )
    torch.testing.assert_close(loss_fn.prior_matching(), expected)


def test_pairs_registered_later_are_used():
    saved = dict(kl_module._REGISTRY)
    try:
        model = VILinear(3, 2, prior=StudentTPrior())
        loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
        assert loss_fn.monte_carlo_variables == ["weight", "bias"]

        @register_kl(StudentTPrior, MeanFieldNormal)
        def _kl(prior, variational, parameters):
            return parameters[0].new_tensor(42.0)

        assert loss_fn.monte_carlo_variables == []
        assert loss_fn.prior_matching().item() == 84.0
    finally:
        kl_module._REGISTRY.clear()
        kl_module._REGISTRY.update(saved)


def test_construction_does_not_draw_random_numbers():
    model = _model(prior=ScaleMixtureNormalPrior())
    state = torch.get_rng_state()
    AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("kl_samples", [0, -2, 1.5, True])
def test_bad_kl_samples_raise(kl_samples):
    with pytest.raises(ValueError, match="kl_samples must be a positive int"):
        AnalyticalKullbackLeiblerLoss(
            VILinear(2, 2), Categorical(), 10, kl_samples=kl_samples
        )


def test_extra_repr_names_the_settings():
    loss_fn = AnalyticalKullbackLeiblerLoss(VILinear(2, 2), Categorical(), 10, kl_samples=4)
    assert "dataset_size=10" in repr(loss_fn) and "kl_samples=4" in repr(loss_fn)


def test_model_without_variables_raises():
    with pytest.raises(NoVariablesError, match="no random variables"):
        AnalyticalKullbackLeiblerLoss(nn.Linear(2, 2), Categorical(), 10)


def test_bad_divergence_type_raises():
    with pytest.raises(
        TypeError, match=r"divergence_type must be a ClosedFormKL \(KullbackLeiblerModule\)"
    ):
        AnalyticalKullbackLeiblerLoss(VILinear(2, 2), Categorical(), 10, "normal")


def test_missing_dataset_size_raises():
    model = VILinear(3, 2)
    loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical())
    with pytest.raises(ValueError, match="dataset_size"):
        loss_fn(model(torch.randn(4, 3), samples=2), torch.zeros(4).long())


def test_layers_added_after_construction_get_their_kl_term():
    # Fine-tuning: a head appended (or replaced) after the loss was built counts.
    torch.manual_seed(0)
    model = VISequential(VILinear(3, 4))
    loss_fn = AnalyticalKullbackLeiblerLoss(model, MeanFieldNormal(), dataset_size=10)
    before = loss_fn.prior_matching()
    model.append(VILinear(4, 2))
    head = kl_divergence(
        model[1].prior["weight"],
        model[1].variational_distribution["weight"],
        model[1].get_variational_parameters("weight"),
    ) + kl_divergence(
        model[1].prior["bias"],
        model[1].variational_distribution["bias"],
        model[1].get_variational_parameters("bias"),
    )
    torch.testing.assert_close(loss_fn.prior_matching(), before + head)
    model[1] = VILinear(4, 2)  # replaced: the new head's parameters count
    loss_fn.prior_matching().backward()
    assert model[1]._weight_log_std.grad is not None
