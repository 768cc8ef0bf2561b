import io
import pickle
import warnings

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi import VILinear, VIModule, base
from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    MeanFieldNormal,
    MeanFieldStudentT,
    NonBayesian,
    UniformPrior,
)
from torch_blue.vi.utils import NoVariablesError, ShapeError, UnsupportedDistributionError


class Affine(VIModule):
    """A custom module: random scale matrix and optional shift."""

    def __init__(self, features: int, shift: bool = True, **vikwargs):
        super().__init__(
            variable_shapes={
                "scale": (features, features),
                "shift": (features,) if shift else None,
            },
            **vikwargs,
        )

    def forward(self, x):
        out = x @ self.scale
        return out if self.shift is None else out + self.shift


def test_parameters_are_named_after_variable_and_parameter():
    module = Affine(3)
    names = {name for name, _ in module.named_parameters()}
    assert names == {"_scale_mean", "_scale_log_std", "_shift_mean", "_shift_log_std"}
    assert module.random_variables == ("scale", "shift")
    assert module._scale_mean.shape == (3, 3)


def test_parameter_names_follow_the_variational_distribution():
    module = Affine(3, variational_distribution=MeanFieldStudentT())
    assert {n for n, _ in module.named_parameters()} == {
        "_scale_mean",
        "_scale_log_scale",
        "_shift_mean",
        "_shift_log_scale",
    }


def test_none_variable_reads_none_and_has_no_parameters():
    module = Affine(3, shift=False)
    assert module.shift is None
    assert {n for n, _ in module.named_parameters()} == {"_scale_mean", "_scale_log_std"}
    with pytest.raises(NoVariablesError, match="'shift' is None"):
        module.get_variational_parameters("shift")


def test_every_access_draws_a_new_sample():
    module = Affine(4)
    first, second = module.scale, module.scale
    assert first.shape == (4, 4)
    assert not torch.equal(first, second)


def test_container_has_no_random_variables():
    container = VIModule()
    assert container.random_variables is None
    with pytest.raises(NoVariablesError, match="no random variables"):
        container.reset_variational_parameters()


def test_per_variable_distributions_are_used_in_order():
    module = Affine(
        2,
        variational_distribution=(MeanFieldNormal(), NonBayesian()),
        prior=MeanFieldNormal(),
    )
    assert isinstance(module.variational_distribution["shift"], NonBayesian)
    assert {n for n, _ in module.named_parameters()} == {
        "_scale_mean",
        "_scale_log_std",
        "_shift_mean",
    }


def test_each_variable_owns_its_distribution_objects():
    prior = MeanFieldNormal(std=2.0)
    a = Affine(3, prior=prior, rescale_prior=True)
    b = Affine(3, prior=prior, rescale_prior=True)
    assert a.prior["scale"] is not a.prior["shift"]
    assert a.prior["scale"] is not b.prior["scale"]
    # The caller's instance is never rescaled, and each copy is rescaled exactly once.
    assert float(prior.std) == pytest.approx(2.0)
    expected = 2.0 / (3 * 3) ** 0.5
    assert float(a.prior["scale"].std) == pytest.approx(expected, rel=1e-3)
    assert float(b.prior["shift"].std) == pytest.approx(expected, rel=1e-3)


def test_default_initialisation_matches_torch_linear_and_fan_in_scaling():
    torch.manual_seed(0)
    layer = VILinear(400, 50)
    bound = 1 / 400**0.5
    assert layer._weight_mean.abs().max() <= bound
    # Uniform(-b, b) has std b / sqrt(3); 20,000 draws give a 1 % standard error.
    assert layer._weight_mean.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    # The default posterior starts at 3 % of the bound (docs/defaults.rst).
    assert torch.allclose(layer._weight_log_std, torch.tensor(0.03 * (bound + 1e-5)).log())


def test_without_kaiming_scaling_the_scale_starts_at_the_distribution_default():
    layer = VILinear(10, 5, variational_distribution=MeanFieldNormal(std=0.3),
                     kaiming_initialization=False)  # fmt: skip
    assert torch.allclose(layer._weight_log_std, torch.tensor(0.3).log())


def test_prior_initialization_sets_the_variational_parameters_to_the_prior():
    layer = VILinear(
        5, 4, prior=MeanFieldNormal(mean=0.1, std=0.2), prior_initialization=True
    )
    assert torch.allclose(layer._weight_mean, torch.tensor(0.1))
    assert torch.allclose(layer._weight_log_std, torch.tensor(0.2).log())


def test_prior_initialization_with_quiet_prior():
    torch.manual_seed(0)
    layer = VILinear(5, 4, prior=BasicQuietPrior(std_ratio=0.5), prior_initialization=True)
    expected = torch.log(0.5 * layer._weight_mean.abs() + 1e-10)
    assert torch.allclose(layer._weight_log_std, expected)


def test_prior_initialization_unsupported_by_prior_raises():
    with pytest.raises(UnsupportedDistributionError, match="prior_initialization"):
        VILinear(3, 2, prior=UniformPrior(), prior_initialization=True)


def test_get_log_probs_matches_the_distributions():
    layer = VILinear(3, 2)
    sample = torch.randn(2, 3)
    mean, log_std = layer.get_variational_parameters("weight")
    expected_q = torch.distributions.Normal(mean, log_std.exp()).log_prob(sample).sum()
    expected_p = torch.distributions.Normal(0.0, 1.0).log_prob(sample).sum()
    log_probs = layer.get_log_probs(sample, "weight")
    assert torch.allclose(log_probs, torch.stack([expected_p, expected_q]), atol=1e-5)


def test_manual_draws_are_gathered_and_averaged_per_variable():
    torch.manual_seed(0)
    layer = VILinear(3, 2)
    layer.reset_log_probs()
    torch.manual_seed(1)
    w1, w2 = layer.weight, layer.weight
    b = layer.bias
    expected = (
        layer.get_log_probs(w1, "weight") + layer.get_log_probs(w2, "weight")
    ) / 2 + layer.get_log_probs(b, "bias")
    assert torch.allclose(layer.gather_log_probs(), expected, atol=1e-5)
    with pytest.raises(NoVariablesError, match="no random variable was drawn"):
        layer.gather_log_probs()


def test_return_log_probs_propagates_to_submodules():
    model = nn.ModuleList([VILinear(2, 2), VILinear(2, 2)])
    outer = VIModule()
    outer.inner = model
    outer.return_log_probs = False
    assert not model[0].return_log_probs and not model[1].return_log_probs
    with pytest.raises(TypeError, match="must be a bool"):
        outer.return_log_probs = 1


def test_state_dict_round_trip_gives_identical_outputs():
    torch.manual_seed(0)
    source = Affine(3)
    target = Affine(3)
    target.load_state_dict(source.state_dict())
    x = torch.randn(5, 3)
    torch.manual_seed(7)
    expected = source(x, samples=4)
    torch.manual_seed(7)
    actual = target(x, samples=4)
    assert torch.equal(expected, actual)
    assert torch.equal(expected.log_probs, actual.log_probs)


def test_state_dict_loads_with_weights_only():
    layer = VILinear(4, 3)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"_weight_mean", "_weight_log_std", "_bias_mean", "_bias_log_std"}
    fresh = VILinear(4, 3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh._weight_mean, layer._weight_mean)


def test_whole_model_pickles_and_deep_copies():
    layer = VILinear(4, 3)
    clone = pickle.loads(pickle.dumps(layer))
    assert torch.equal(clone._weight_mean, layer._weight_mean)
    assert clone.prior["weight"] is not layer.prior["weight"]


def test_device_and_dtype_factory_arguments():
    layer = VILinear(3, 2, dtype=torch.float64)
    assert layer._weight_mean.dtype == torch.float64
    out = layer(torch.randn(4, 3, dtype=torch.float64), samples=2)
    assert out.dtype == torch.float64 and out.log_probs.dtype == torch.float64


def test_assigning_a_random_variable_raises():
    layer = VILinear(3, 2)
    with pytest.raises(AttributeError, match="'weight' is a random variable"):
        layer.weight = nn.Parameter(torch.zeros(2, 3))


def test_missing_forward_raises():
    with pytest.raises(NotImplementedError, match="VIModule does not implement forward"):
        VIModule()(torch.zeros(1))


# ---------------------------------------------------------------- contract 7: errors
@pytest.mark.parametrize(
    ("shapes", "error", "match"),
    [
        ([("w", (2, 2))], TypeError, "must be a mapping"),
        ({"w": 3}, ShapeError, "tuple of positive ints"),
        ({"w": (2, 0)}, ShapeError, "positive ints"),
        ({"w": (2.0, 2)}, ShapeError, "positive ints"),
        ({"not valid": (2,)}, ValueError, "identifiers"),
        ({"forward": (2,)}, ValueError, "shadow"),
    ],
)
def test_bad_variable_shapes_raise(shapes, error, match):
    with pytest.raises(error, match=match):
        VIModule(variable_shapes=shapes)


def test_wrong_number_of_distributions_raises():
    with pytest.raises(ValueError, match="has 3 entries but the module declares 2"):
        Affine(2, prior=(MeanFieldNormal(),) * 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prior": Categorical()}, "Categorical cannot be used as prior"),
        (
            {"variational_distribution": UniformPrior()},
            "UniformPrior cannot be used as variational_distribution",
        ),
        ({"prior": (MeanFieldNormal(), "normal")}, "str cannot be used as prior"),
    ],
)
def test_distribution_in_a_role_it_cannot_play_raises(kwargs, match):
    with pytest.raises(UnsupportedDistributionError, match=match):
        Affine(2, **kwargs)


class _LocScaleT(MeanFieldStudentT):
    """A variational family without a parameter called "mean"."""

    distribution_parameters = ("loc", "log_scale")


def test_prior_needing_a_parameter_the_variational_lacks_raises():
    with pytest.raises(
        UnsupportedDistributionError, match="needs the variational parameters"
    ):
        VILinear(2, 2, prior=BasicQuietPrior(), variational_distribution=_LocScaleT())


def test_unknown_variable_raises():
    with pytest.raises(NoVariablesError, match="no random variable 'kernel'"):
        VILinear(2, 2).sample_variable("kernel")


# ------------------------------------------------------------- reliability
def test_manual_draws_keep_a_fixed_number_of_tensors():
    # Reading layer.weight outside a call (inspection) must not pile up log-probs:
    # one running sum per variable, whatever the number of reads.
    layer = VILinear(64, 64)
    with torch.no_grad():
        draws = [layer.weight for _ in range(2000)]
    record = layer._manual_log_probs["weight"]
    assert record[1] == 2000 and not record[0].requires_grad
    expected = torch.stack([layer.get_log_probs(w, "weight") for w in draws]).mean(0)
    torch.testing.assert_close(layer.gather_log_probs(), expected, rtol=1e-4, atol=1e-2)
    assert layer._manual_log_probs == {}


def test_many_manual_draws_with_gradients_warn_once():
    layer = VILinear(2, 2)
    with pytest.warns(UserWarning, match="1000 draws of 'weight' outside a sampled"):
        draws = [layer.weight for _ in range(base.MANUAL_DRAWS_WARNING)]
    assert len(draws) == base.MANUAL_DRAWS_WARNING
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert layer.weight.shape == (2, 2)  # no second warning
    layer.reset_log_probs()


def test_return_log_probs_must_be_a_bool_in_the_constructor_too():
    with pytest.raises(TypeError, match="VILinear: return_log_probs must be a bool"):
        VILinear(2, 2, return_log_probs="no")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_log_probs_are_float32_and_finite(dtype):
    # A 256x256 layer's log-prob sums are about -6e4 and 3e5 (float16's limit: 65504).
    torch.manual_seed(0)
    layer = VILinear(256, 256).to(dtype)
    out = layer(torch.randn(3, 256, dtype=dtype), samples=2)
    assert out.dtype == dtype and out.log_probs.dtype == torch.float32
    assert torch.isfinite(out.log_probs).all()
    # A weight drawn outside a call is drawn and scored in float32, then rounded: its
    # log-probs are those of the float32 draw (replayed here from the same state),
    # not of the rounded weight (which differ by the rounding over the scale).
    state = torch.get_rng_state()
    weight = layer.weight
    torch.set_rng_state(state)
    mean, std = layer._weight_mean.float(), layer._weight_log_std.float().exp()
    drawn = mean + std * torch.randn_like(mean)
    assert weight.dtype == dtype
    torch.testing.assert_close(weight, drawn.to(dtype))
    torch.testing.assert_close(
        layer.gather_log_probs(), layer.get_log_probs(drawn, "weight"), rtol=1e-6, atol=0.1
    )
    layer.reset_log_probs()


class _Twice(VIModule):
    """Applies one layer twice: weight tying, or a hand-written recurrent loop."""

    def __init__(self):
        super().__init__()
        self.cell = VILinear(3, 3)

    def forward(self, x):
        return self.cell(x), self.cell(x)


def test_reuse_draws_shares_one_draw_per_sample_and_call():
    torch.manual_seed(0)
    model = _Twice()
    x = torch.randn(4, 3)
    first, second = model(x, samples=5)
    assert not torch.equal(first, second)  # the default: every access samples
    model.reuse_draws = True
    assert model.cell.reuse_draws
    first, second = model(x, samples=5)
    assert torch.equal(first, second)
    assert first.std(dim=0).min() > 0  # still one independent draw per sample
    # the draw and its log-probs, counted once, are those of a single application
    torch.manual_seed(1)
    tied, _ = model(x, samples=5)
    torch.manual_seed(1)
    single = model.cell(x, samples=5)
    assert torch.equal(tied, single)
    torch.testing.assert_close(tied.log_probs, single.log_probs)
    again, _ = model(x, samples=5)
    assert not torch.equal(again, first)  # a new call draws anew
    with vi.mean_weights():
        a, b = model(x)
    assert torch.equal(a, b)


def test_reuse_draws_needs_drawn_weights():
    model = _Twice()
    model.cell.estimator = "flipout"
    with pytest.raises(ValueError, match="reuse_draws needs estimator='reparam"):
        model.reuse_draws = True
    assert not model.reuse_draws and not model.cell.reuse_draws  # nothing changed
    model.cell.estimator = "reparameterization"
    model.reuse_draws = True
    with pytest.raises(ValueError, match="draws no weights to reuse"):
        model.cell.estimator = "local_reparameterization"
    with pytest.raises(TypeError, match="reuse_draws must be a bool"):
        model.reuse_draws = 1


def test_reuse_draws_in_prediction_draws_weights():
    # Prediction would switch a dense layer to local reparameterisation, which
    # draws no weight to share; with reuse_draws the weights are drawn.
    model = _Twice()
    model.reuse_draws = True
    model.return_log_probs = False
    first, second = model(torch.randn(4, 3), samples=3)
    assert torch.equal(first, second)


def test_named_random_variables_method_lists_what_the_function_lists():
    model = vi.VISequential(VILinear(2, 3), nn.ReLU(), VILinear(3, 1, bias=False))
    listed = list(model.named_random_variables())
    assert [v.name for v in listed] == ["0.weight", "0.bias", "2.weight"]
    assert listed == list(base.named_random_variables(model))
    assert listed[2].module is model[2] and listed[2].variable == "weight"
