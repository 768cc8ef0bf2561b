"""Contracts every prior must keep, driven by one registry of examples.

Each entry builds a fresh prior; the tests check the behaviour the engine relies on:
sums, vmap lanes, per-layer copies, rescaling, pickling, dtype, training.
"""

import copy
import math
import pickle
import warnings

import pytest
import torch
from torch import nn

from torch_blue.vi import (
    AnalyticalKullbackLeiblerLoss,
    KullbackLeiblerLoss,
    VILinear,
    VISequential,
)
from torch_blue.vi.distributions import (
    Categorical,
    HorseshoePrior,
    KnownMeanNormalGammaPrior,
    LaplacePrior,
    LogUniformPrior,
    MeanFieldNormal,
    NormalGammaPrior,
    RadialNormal,
    ScaleMixtureNormalPrior,
    StudentTPrior,
)
from torch_blue.vi.distributions import __dict__ as distributions_namespace
from torch_blue.vi.utils import norm_constants

PRIORS = {
    "scale_mixture": lambda: ScaleMixtureNormalPrior(pi=0.25, sigma_1=1.0, sigma_2=0.01),
    "laplace": lambda: LaplacePrior(loc=0.1, scale=0.5),
    "student_t": lambda: StudentTPrior(degrees_of_freedom=3.0, scale=0.5),
    "normal_gamma": lambda: NormalGammaPrior(kappa=2.0, alpha=2.0, beta=0.5),
    "known_mean_normal_gamma": lambda: KnownMeanNormalGammaPrior(alpha=2.0, beta=0.5),
    "log_uniform": LogUniformPrior,
    "horseshoe": lambda: HorseshoePrior(scale=0.5),
}


@pytest.fixture(params=sorted(PRIORS))
def make_prior(request):
    return PRIORS[request.param]


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    return x[:512], y[:512]


def test_log_prob_sums_to_prior_log_prob_sum(make_prior):
    prior = make_prior()
    sample = 0.3 * torch.randn(7, 5, dtype=torch.float64)
    for constants in (True, False):
        with norm_constants(constants):
            torch.testing.assert_close(
                prior.prior_log_prob(sample).sum(), prior.prior_log_prob_sum(sample)
            )


def test_norm_constants_shift_by_a_constant(make_prior):
    prior = make_prior()
    sample = torch.randn(20, dtype=torch.float64)
    with_constants = prior.prior_log_prob(sample)
    with norm_constants(False):
        without = prior.prior_log_prob(sample)
    shift = without - with_constants
    torch.testing.assert_close(shift, shift[:1].expand(20))


def test_prior_log_prob_sum_under_vmap_lanes(make_prior):
    prior = make_prior()
    weights = 0.3 * torch.randn(4, 3, 5)
    for method in (prior.prior_log_prob_sum, prior.prior_log_prob):
        lanes = torch.vmap(method, randomness="different")(weights)
        torch.testing.assert_close(lanes, torch.stack([method(w) for w in weights]))


def test_layer_records_finite_log_probs_per_lane(make_prior):
    layer = VILinear(5, 3, prior=make_prior())
    out = layer(torch.randn(2, 5), samples=4)
    assert out.shape == (4, 2, 3)
    assert out.log_probs.shape == (4, 2)
    assert torch.isfinite(out.log_probs).all()
    assert len(set(out.log_probs[:, 0].tolist())) == 4  # one draw per lane


def test_each_layer_and_variable_owns_a_copy(make_prior):
    prior = make_prior()
    first, second = VILinear(4, 3, prior=prior), VILinear(4, 3, prior=prior)
    owned = [first.prior["weight"], first.prior["bias"], second.prior["weight"]]
    assert len({id(p) for p in [prior, *owned]}) == 4
    assert all(type(p) is type(prior) for p in owned)


def test_rescale_prior_works_once_and_leaves_the_argument_alone(make_prior):
    prior = make_prior()
    before = prior.prior_log_prob_sum(torch.full((3,), 0.2))
    layer = VILinear(12, 3, prior=prior, rescale_prior=True)
    torch.testing.assert_close(prior.prior_log_prob_sum(torch.full((3,), 0.2)), before)
    rescaled = layer.prior["weight"]
    assert rescaled._rescaled
    with pytest.warns(UserWarning, match="rescaled already"):
        rescaled.kaiming_rescale(12)
    out = layer(torch.randn(2, 12), samples=3)
    assert torch.isfinite(out.log_probs).all()


def test_repr_rebuilds_an_equal_prior(make_prior):
    prior = make_prior()
    text = repr(prior)
    assert text.startswith(type(prior).__name__ + "(")
    rebuilt = eval(text, dict(distributions_namespace))
    sample = torch.randn(6)
    torch.testing.assert_close(
        rebuilt.prior_log_prob(sample), prior.prior_log_prob(sample), rtol=1e-4, atol=1e-5
    )


def test_pickle_and_deepcopy_of_a_layer(make_prior):
    layer = VILinear(4, 2, prior=make_prior())
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert type(clone.prior["weight"]) is type(layer.prior["weight"])
        assert clone.prior["weight"] is not layer.prior["weight"]


def test_float64_layer_gives_float64_log_probs(make_prior):
    layer = VILinear(4, 2, prior=make_prior(), dtype=torch.float64)
    out = layer(torch.randn(3, 4, dtype=torch.float64), samples=2)
    assert out.log_probs.dtype == torch.float64


@pytest.mark.parametrize("loss", ["monte_carlo", "analytical"])
def test_small_mlp_trains_on_digits_without_nans(make_prior, digits, loss):
    x, y = digits
    prior = make_prior()
    model = VISequential(
        VILinear(64, 32, prior=prior, variational_distribution=MeanFieldNormal(std=0.1)),
        nn.ReLU(),
        VILinear(32, 10, prior=prior, variational_distribution=MeanFieldNormal(std=0.1)),
    )
    if loss == "analytical":
        model.return_log_probs = False
        loss_fn = AnalyticalKullbackLeiblerLoss(model, Categorical(), dataset_size=len(y))
    else:
        loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=len(y))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        for batch in torch.randperm(len(y)).split(128):
            optimizer.zero_grad()
            value = loss_fn(model(x[batch], samples=2), y[batch])
            value.backward()
            optimizer.step()
            losses.append(value.item())
    assert all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_radial_posterior_trains_on_digits_without_nans(digits):
    x, y = digits
    model = VISequential(
        VILinear(64, 32, variational_distribution=RadialNormal()),
        nn.ReLU(),
        VILinear(32, 10, variational_distribution=RadialNormal()),
    )
    loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=len(y))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in torch.randperm(len(y)).split(128):
        optimizer.zero_grad()
        value = loss_fn(model(x[batch], samples=2), y[batch])
        value.backward()
        optimizer.step()
        assert math.isfinite(value.item())


# ---------------------------------------------------------------- fan-in scaled Normal
@pytest.mark.parametrize("fan_in", [1, 12, 300])
def test_rescale_prior_gives_the_kaiming_uniform_std(fan_in):
    # A fan-in scaled Gaussian prior needs no class of its own: rescale_prior=True
    # multiplies the Normal's std by 1/sqrt(3 fan_in), the std of nn.Linear's init.
    layer = VILinear(fan_in, 4, rescale_prior=True)
    expected = 1.0 / math.sqrt(3 * fan_in)
    for variable in ("weight", "bias"):
        std = layer.prior[variable].std
        torch.testing.assert_close(std, torch.tensor(expected + 1e-5))


def test_rescale_prior_with_a_gain_gives_he_initialisation_std():
    # std = gain / sqrt(fan_in) for a ReLU layer (gain sqrt(2)): start from
    # std = gain * sqrt(3). (kaiming_rescale shifts log_std by log(factor + 1e-5), hence
    # the relative tolerance of 1e-5 / factor.)
    gain, fan_in = math.sqrt(2.0), 50
    layer = VILinear(
        fan_in, 4, prior=MeanFieldNormal(std=gain * math.sqrt(3)), rescale_prior=True
    )
    torch.testing.assert_close(
        layer.prior["weight"].std, torch.tensor(gain / math.sqrt(fan_in)), rtol=2e-4, atol=0
    )


def test_rescale_prior_uses_each_layers_own_fan_in():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = VISequential(
            VILinear(8, 32, rescale_prior=True),
            nn.ReLU(),
            VILinear(32, 2, rescale_prior=True),
        )
    torch.testing.assert_close(
        model[0].prior["weight"].std, torch.tensor(1 / math.sqrt(24))
    )
    torch.testing.assert_close(
        model[2].prior["weight"].std, torch.tensor(1 / math.sqrt(96))
    )
