import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    MeanFieldNormal,
    MeanFieldStudentT,
    NonBayesian,
    UniformPrior,
    has_closed_form_kl,
    kl_divergence,
    register_kl,
)
from torch_blue.vi.distributions import kl as kl_module
from torch_blue.vi.distributions.kl import (
    KullbackLeiblerModule,
    NonBayesianDivergence,
    NormalNormalDivergence,
    UniformNormalDivergence,
)
from torch_blue.vi.utils import UnsupportedDistributionError, norm_constants

N_DRAWS = 200_000


@pytest.fixture
def registry():
    """Restore the KL registry after a test that registers pairs."""
    saved = dict(kl_module._REGISTRY)
    yield kl_module._REGISTRY
    kl_module._REGISTRY.clear()
    kl_module._REGISTRY.update(saved)


def _variational(n=4):
    return torch.randn(n), 0.5 * torch.randn(n)


def _mc_check(prior, variational, parameters):
    """MC estimate of KL(q || p) and its standard error, from N_DRAWS draws of q."""
    mean, log_std = parameters
    draws = mean + log_std.exp() * torch.randn(N_DRAWS, *mean.shape)
    log_q = variational.log_prob(draws, (mean, log_std)).sum(-1)
    log_p = prior.prior_log_prob(draws).sum(-1)
    per_draw = (log_q - log_p).double()
    return per_draw.mean().item(), per_draw.std().item() / math.sqrt(N_DRAWS)


# ---------------------------------------------------------------- Normal / Normal
@pytest.mark.parametrize(("p_mean", "p_std"), [(0.0, 1.0), (0.5, 0.2), (-1.0, 3.0)])
def test_normal_normal_matches_torch(p_mean, p_std):
    mean, log_std = _variational()
    actual = kl_divergence(
        MeanFieldNormal(p_mean, p_std), MeanFieldNormal(), [mean, log_std]
    )
    expected = td.kl_divergence(
        td.Normal(mean, log_std.exp()), td.Normal(p_mean, p_std)
    ).sum()
    torch.testing.assert_close(actual, expected)


def test_normal_normal_zero_for_identical():
    mean = torch.full((5,), 0.3)
    log_std = torch.full((5,), math.log(2.0))
    kl = kl_divergence(MeanFieldNormal(0.3, 2.0), MeanFieldNormal(), [mean, log_std])
    torch.testing.assert_close(kl, torch.tensor(0.0))


@pytest.mark.parametrize("constants", [True, False])
def test_normal_normal_matches_monte_carlo(constants):
    torch.manual_seed(1)
    prior = MeanFieldNormal(0.5, 0.8)
    parameters = _variational()
    closed = kl_divergence(prior, MeanFieldNormal(), parameters).item()
    with norm_constants(constants):
        estimate, se = _mc_check(prior, MeanFieldNormal(), parameters)
    # 5 standard errors of the MC mean (SE = sample std of per-draw values / sqrt(n)).
    assert abs(estimate - closed) < 5 * se


def test_normal_normal_gradcheck():
    args = torch.randn(4, 5, dtype=torch.float64).unbind(0)
    args = tuple(a.clone().requires_grad_() for a in args)
    assert torch.autograd.gradcheck(NormalNormalDivergence.forward, args)


def test_kl_module_call_unpacks_parameters():
    prior = (torch.tensor(0.2), torch.tensor(-0.1))
    variational = _variational()
    torch.testing.assert_close(
        NormalNormalDivergence()(prior, variational),
        NormalNormalDivergence.forward(*prior, *variational),
    )


def test_kl_module_base_forward_not_implemented():
    with pytest.raises(NotImplementedError, match="does not define forward"):
        KullbackLeiblerModule()((), ())


# ---------------------------------------------------------------- Uniform / Normal
def test_uniform_normal_is_negative_entropy():
    mean, log_std = _variational()
    actual = kl_divergence(UniformPrior(), MeanFieldNormal(), [mean, log_std])
    expected = -td.Normal(mean, log_std.exp()).entropy().sum()
    torch.testing.assert_close(actual, expected)


def test_uniform_normal_without_constants_is_shifted():
    mean, log_std = _variational()
    with_constants = kl_divergence(UniformPrior(), MeanFieldNormal(), [mean, log_std])
    with norm_constants(False):
        without = kl_divergence(UniformPrior(), MeanFieldNormal(), [mean, log_std])
    # The Normal's log-density loses -0.5 * log(2 pi) per element, the KL gains it.
    torch.testing.assert_close(without, with_constants + 0.5 * math.log(2 * math.pi) * 4)


@pytest.mark.parametrize("constants", [True, False])
def test_uniform_normal_matches_monte_carlo(constants):
    torch.manual_seed(2)
    parameters = _variational()
    with norm_constants(constants):
        closed = kl_divergence(UniformPrior(), MeanFieldNormal(), parameters).item()
        estimate, se = _mc_check(UniformPrior(), MeanFieldNormal(), parameters)
    # 5 standard errors of the MC mean.
    assert abs(estimate - closed) < 5 * se


def test_uniform_normal_gradcheck():
    mean, log_std = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, s: UniformNormalDivergence.forward(None, m, s), (mean, log_std)
    )


# ---------------------------------------------------------------- NonBayesian
@pytest.mark.parametrize(
    "prior", [MeanFieldNormal(1.0, 0.1), UniformPrior(), BasicQuietPrior(), NonBayesian()]
)
def test_non_bayesian_variational_is_zero(prior):
    mean = torch.randn(3, 2, dtype=torch.float64)
    assert has_closed_form_kl(prior, NonBayesian())
    kl = kl_divergence(prior, NonBayesian(), [mean])
    assert kl.shape == ()
    assert kl.dtype == torch.float64
    assert kl.item() == 0.0


def test_non_bayesian_divergence_without_tensors():
    assert torch.equal(NonBayesianDivergence.forward(None), torch.zeros(()))


# ---------------------------------------------------------------- registry
def test_builtin_pairs_registered():
    assert has_closed_form_kl(MeanFieldNormal(), MeanFieldNormal())
    assert has_closed_form_kl(UniformPrior(), MeanFieldNormal())
    assert not has_closed_form_kl(BasicQuietPrior(), MeanFieldNormal())
    assert not has_closed_form_kl(MeanFieldNormal(), MeanFieldStudentT())


def test_register_new_pair(registry):
    assert not has_closed_form_kl(UniformPrior(), MeanFieldStudentT())

    @register_kl(UniformPrior, MeanFieldStudentT)
    def _kl(prior, variational, parameters):
        return parameters[1].sum() * 10

    assert registry[(UniformPrior, MeanFieldStudentT)] is _kl
    assert has_closed_form_kl(UniformPrior(), MeanFieldStudentT())
    log_scale = torch.tensor([0.5, 1.0])
    kl = kl_divergence(UniformPrior(), MeanFieldStudentT(), [torch.zeros(2), log_scale])
    torch.testing.assert_close(kl, torch.tensor(15.0))


class _SpecialNormal(MeanFieldNormal):
    pass


def test_subclass_inherits_parent_pair():
    parameters = _variational()
    torch.testing.assert_close(
        kl_divergence(_SpecialNormal(0.1, 2.0), _SpecialNormal(), parameters),
        kl_divergence(MeanFieldNormal(0.1, 2.0), MeanFieldNormal(), parameters),
    )


def test_most_specific_pair_wins(registry):
    @register_kl(_SpecialNormal, MeanFieldNormal)
    def _special(prior, variational, parameters):
        return torch.tensor(-1.0)

    @register_kl(_SpecialNormal, _SpecialNormal)
    def _most_special(prior, variational, parameters):
        return torch.tensor(-2.0)

    parameters = _variational()
    assert kl_divergence(_SpecialNormal(), _SpecialNormal(), parameters).item() == -2.0
    assert kl_divergence(_SpecialNormal(), MeanFieldNormal(), parameters).item() == -1.0
    torch.testing.assert_close(
        kl_divergence(MeanFieldNormal(), _SpecialNormal(), parameters),
        NormalNormalDivergence.forward(0.0, 0.0, *parameters),
    )


@pytest.mark.parametrize(
    ("prior", "variational"),
    [
        (BasicQuietPrior(), MeanFieldNormal()),
        (MeanFieldNormal(), MeanFieldStudentT()),
        (UniformPrior(), MeanFieldStudentT()),
    ],
)
def test_unregistered_pair_raises(prior, variational):
    with pytest.raises(UnsupportedDistributionError, match="no closed-form KL divergence"):
        kl_divergence(prior, variational, _variational())


@pytest.mark.parametrize(
    ("prior_type", "variational_type", "match"),
    [
        (Categorical, MeanFieldNormal, "is not a subclass of Prior"),
        (int, MeanFieldNormal, "is not a subclass of Prior"),
        (MeanFieldNormal(), MeanFieldNormal, "is not a subclass of Prior"),
        (UniformPrior, BasicQuietPrior, "is not a subclass of VariationalDistribution"),
        (UniformPrior, Categorical, "is not a subclass of VariationalDistribution"),
    ],
)
def test_register_kl_rejects_wrong_types(registry, prior_type, variational_type, match):
    before = dict(registry)
    with pytest.raises(TypeError, match=match):
        register_kl(prior_type, variational_type)
    assert registry == before
