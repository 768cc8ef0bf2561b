import math

import pytest
import torch
from torch import distributions as td

from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    EmpiricalNormalPrior,
    HorseshoePrior,
    LaplacePrior,
    LogUniformPrior,
    MeanFieldNormal,
    MeanFieldStudentT,
    NonBayesian,
    NormalGammaPrior,
    RadialNormal,
    ScaleMixtureNormalPrior,
    StudentTPrior,
    UniformPrior,
    has_closed_form_kl,
    kl_divergence,
    monte_carlo_kl_divergence,
    register_kl,
)
from torch_blue.vi.distributions import kl as kl_module
from torch_blue.vi.distributions.kl import (
    KullbackLeiblerModule,
    LaplaceNormalDivergence,
    LogUniformNormalDivergence,
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


@pytest.mark.parametrize("prior", [(0.0, 0.0), (0.3, -0.7)])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_normal_normal_with_a_scalar_prior_matches_the_element_wise_form(prior, as_tensor):
    # A scalar prior takes the reduction formula; the same prior expanded to the
    # parameters' shape takes the element-wise one.
    torch.manual_seed(0)
    mean = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    log_std = (torch.randn(4, 5, dtype=torch.float64) - 1).requires_grad_()
    scalar = tuple(torch.tensor(v, dtype=torch.float64) if as_tensor else v for v in prior)
    expanded = tuple(torch.full((4, 5), v, dtype=torch.float64) for v in prior)
    got = NormalNormalDivergence.forward(*scalar, mean, log_std)
    want = NormalNormalDivergence.forward(*expanded, mean, log_std)
    torch.testing.assert_close(got, want)
    for g, w in zip(
        torch.autograd.grad(got, (mean, log_std)),
        torch.autograd.grad(want, (mean, log_std)),
    ):
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradcheck(
        lambda m, s: NormalNormalDivergence.forward(*scalar, m, s), (mean, log_std)
    )


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
    assert has_closed_form_kl(LaplacePrior(), MeanFieldNormal())
    assert has_closed_form_kl(LogUniformPrior(), MeanFieldNormal())
    assert has_closed_form_kl(MeanFieldNormal(), RadialNormal())
    assert has_closed_form_kl(UniformPrior(), RadialNormal())
    assert not has_closed_form_kl(BasicQuietPrior(), MeanFieldNormal())
    assert not has_closed_form_kl(MeanFieldNormal(), MeanFieldStudentT())
    for prior in (
        ScaleMixtureNormalPrior(),
        StudentTPrior(),
        HorseshoePrior(),
        NormalGammaPrior(),
    ):
        assert not has_closed_form_kl(prior, MeanFieldNormal())
        assert not has_closed_form_kl(prior, RadialNormal())


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


# ---------------------------------------------------------------- Laplace / Normal
def _laplace_parameters():
    return torch.tensor([0.0, 0.5, -1.0, 2.0]), torch.tensor([0.0, -1.0, 0.5, -3.0])


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 1.0), (0.3, 0.2), (-1.0, 2.0)])
@pytest.mark.parametrize("constants", [True, False])
def test_laplace_normal_matches_monte_carlo(loc, scale, constants):
    torch.manual_seed(3)
    prior = LaplacePrior(loc, scale)
    parameters = _laplace_parameters()
    with norm_constants(constants):
        closed = kl_divergence(prior, MeanFieldNormal(), parameters).item()
        estimate, se = _mc_check(prior, MeanFieldNormal(), parameters)
    # 5 standard errors of the MC mean.
    assert abs(estimate - closed) < 5 * se


def test_laplace_normal_matches_numerical_integration():
    integrate = pytest.importorskip("scipy.integrate")
    mu, sigma, loc, scale = 0.7, 0.4, -0.2, 0.5

    def integrand(w):
        log_q = -0.5 * ((w - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
        log_p = -abs(w - loc) / scale - math.log(2 * scale)
        return math.exp(log_q) * (log_q - log_p)

    expected = sum(
        integrate.quad(integrand, a, b, epsrel=1e-12)[0]
        for a, b in [(-math.inf, loc), (loc, math.inf)]
    )
    actual = LaplaceNormalDivergence.forward(
        torch.tensor(loc, dtype=torch.float64),
        torch.tensor(math.log(scale), dtype=torch.float64),
        torch.tensor([mu], dtype=torch.float64),
        torch.tensor([math.log(sigma)], dtype=torch.float64),
    )
    assert actual.item() == pytest.approx(expected, abs=1e-10)


def test_laplace_normal_gradcheck():
    args = [torch.randn(4, dtype=torch.float64) for _ in range(2)]
    loc = torch.tensor(0.2, dtype=torch.float64)
    log_scale = torch.tensor(-0.4, dtype=torch.float64)
    inputs = tuple(a.requires_grad_() for a in (loc, log_scale, *args))
    assert torch.autograd.gradcheck(LaplaceNormalDivergence.forward, inputs)


def test_laplace_normal_as_forced_divergence():
    prior = LaplacePrior(0.1, 0.5)
    parameters = _laplace_parameters()
    torch.testing.assert_close(
        LaplaceNormalDivergence()(prior.get_parameters(), parameters),
        kl_divergence(prior, MeanFieldNormal(), parameters),
    )


# ---------------------------------------------------------------- log-uniform / Normal
# Largest gap between Molchanov et al.'s fit and the exact KL over log alpha in
# [-8, 8], computed by numerical integration: 0.0094 nats per weight.
APPROXIMATION_ERROR = 0.0095


@pytest.mark.parametrize("constants", [True, False])
def test_log_uniform_normal_matches_monte_carlo_up_to_the_fit(constants):
    torch.manual_seed(4)
    # log alpha = 2 log sigma - log mu^2 from about -6 to 6
    mean = torch.tensor([1.0, 1.0, 1.0, 0.1, 0.01, -0.5])
    log_std = torch.tensor([-3.0, -1.0, 0.0, 0.0, 0.0, -0.7])
    with norm_constants(constants):
        closed = kl_divergence(LogUniformPrior(), MeanFieldNormal(), (mean, log_std)).item()
        estimate, se = _mc_check(LogUniformPrior(), MeanFieldNormal(), (mean, log_std))
    assert abs(estimate - closed) < 5 * se + APPROXIMATION_ERROR * len(mean)


def test_log_uniform_normal_vanishes_for_pure_noise_and_grows_for_sharp_weights():
    noise = LogUniformNormalDivergence.forward(torch.tensor([1e-6]), torch.tensor([0.0]))
    assert noise.item() == pytest.approx(0.0, abs=1e-5)
    sharp = LogUniformNormalDivergence.forward(torch.tensor([1.0]), torch.tensor([-5.0]))
    assert sharp.item() == pytest.approx(5.0 + 0.63576, abs=1e-3)  # -log(alpha)/2 + k1


def test_log_uniform_normal_gradcheck_and_finite_gradient_at_zero_mean():
    mean = torch.tensor([0.5, -1.2, 0.05], dtype=torch.float64, requires_grad=True)
    log_std = torch.tensor([-1.0, 0.3, -2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LogUniformNormalDivergence.forward, (mean, log_std))
    zero = torch.zeros(2, requires_grad=True)
    LogUniformNormalDivergence.forward(zero, torch.zeros(2)).backward()
    assert torch.isfinite(zero.grad).all()


# ---------------------------------------------------------------- radial
def _radial_mc(prior, variational, parameters, n=50_000):
    draws = torch.vmap(
        lambda _: variational.sample_and_log_prob(parameters), randomness="different"
    )(torch.empty(n))
    samples, log_q = draws
    log_p = torch.vmap(prior.prior_log_prob_sum)(samples)
    per_draw = (log_q - log_p).double()
    return per_draw.mean().item(), per_draw.std().item() / math.sqrt(n)


@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize("constants", [True, False])
def test_normal_radial_matches_monte_carlo(per_unit, constants):
    torch.manual_seed(5)
    prior = MeanFieldNormal(0.2, 0.7)
    variational = RadialNormal(per_unit=per_unit)
    parameters = (torch.randn(3, 4), 0.3 * torch.randn(3, 4))
    with norm_constants(constants):
        closed = kl_divergence(prior, variational, parameters).item()
        estimate, se = _radial_mc(prior, variational, parameters, 20_000)
    assert abs(estimate - closed) < 5 * se


def test_normal_radial_kl_does_not_depend_on_norm_constants():
    parameters = (torch.randn(3, 4), 0.3 * torch.randn(3, 4))
    with_constants = kl_divergence(MeanFieldNormal(), RadialNormal(), parameters)
    with norm_constants(False):
        without = kl_divergence(MeanFieldNormal(), RadialNormal(), parameters)
    torch.testing.assert_close(with_constants, without)


def test_uniform_radial_is_negative_entropy_and_empirical_matches_normal():
    parameters = (torch.randn(3, 4), 0.3 * torch.randn(3, 4))
    variational = RadialNormal()
    torch.testing.assert_close(
        kl_divergence(UniformPrior(), variational, parameters),
        -variational.entropy(parameters),
    )
    empirical = EmpiricalNormalPrior(torch.full((3, 4), 0.2), torch.full((3, 4), 0.7))
    torch.testing.assert_close(
        kl_divergence(empirical, variational, parameters),
        kl_divergence(MeanFieldNormal(0.2, 0.7), variational, parameters),
    )


def test_normal_radial_gradcheck():
    variational = RadialNormal(per_unit=True)
    mean, log_std = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    prior = MeanFieldNormal(0.1, 0.5)
    assert torch.autograd.gradcheck(
        lambda m, s: kl_divergence(prior, variational, (m, s)), (mean, log_std)
    )


# ---------------------------------------------------------------- Monte Carlo
def test_monte_carlo_is_unbiased_for_normal_normal():
    torch.manual_seed(6)
    prior = MeanFieldNormal(0.1, 0.5)
    parameters = _variational()
    estimates = torch.stack(
        [
            monte_carlo_kl_divergence(prior, MeanFieldNormal(), parameters)
            for _ in range(4000)
        ]
    )
    closed = kl_divergence(prior, MeanFieldNormal(), parameters)
    se = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - closed) < 5 * se


def test_monte_carlo_averages_its_draws():
    prior, variational = StudentTPrior(), MeanFieldNormal()
    parameters = _variational()
    torch.manual_seed(7)
    averaged = monte_carlo_kl_divergence(prior, variational, parameters, samples=3)
    torch.manual_seed(7)
    singles = [monte_carlo_kl_divergence(prior, variational, parameters) for _ in range(3)]
    torch.testing.assert_close(averaged, torch.stack(singles).mean())


def test_monte_carlo_passes_the_priors_hyperparameters_and_is_differentiable():
    mean, log_std = (p.requires_grad_() for p in _variational())
    estimate = monte_carlo_kl_divergence(
        BasicQuietPrior(), MeanFieldNormal(), (mean, log_std), hyperparameters=(mean,)
    )
    estimate.backward()
    assert estimate.shape == ()
    assert mean.grad is not None and log_std.grad is not None


@pytest.mark.parametrize("samples", [0, -1, 1.5, True, "2"])
def test_monte_carlo_rejects_bad_sample_counts(samples):
    with pytest.raises(ValueError, match="samples must be a positive int"):
        monte_carlo_kl_divergence(
            MeanFieldNormal(), MeanFieldNormal(), _variational(), samples
        )


def test_monte_carlo_draws_are_the_terms_of_the_estimate_and_respect_a_mask():
    prior, variational = StudentTPrior(), MeanFieldNormal()
    params = (torch.randn(6, 5), torch.full((6, 5), -1.0))
    torch.manual_seed(3)
    draws = kl_module.monte_carlo_kl_draws(prior, variational, params, 4)
    torch.manual_seed(3)
    estimate = kl_module.monte_carlo_kl_divergence(prior, variational, params, 4)
    assert draws.shape == (4,)
    torch.testing.assert_close(draws.mean(), estimate)
    # A mask keeps the elements it selects: the same draw, summed over them only.
    keep = torch.rand(6, 5) > 0.5
    torch.manual_seed(4)
    masked = kl_module.monte_carlo_kl_draws(prior, variational, params, 1, keep=keep)
    torch.manual_seed(4)
    sample = variational.sample(params)
    ratio = variational.log_prob(sample, params) - prior.prior_log_prob(sample)
    torch.testing.assert_close(masked[0], ratio[keep].sum())


def test_upstream_name_of_the_closed_form_base_is_an_alias():
    assert KullbackLeiblerModule is kl_module.ClosedFormKL
    assert not issubclass(KullbackLeiblerModule, torch.nn.Module)
