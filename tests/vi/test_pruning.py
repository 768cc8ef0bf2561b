import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from torch_blue import vi
from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    MeanFieldNormal,
    MeanFieldStudentT,
    UniformPrior,
)
from torch_blue.vi.pruning import (
    PRUNED_LOG_STD,
    compression_report,
    description_length,
    prune,
    pruning_masks,
    signal_to_noise,
)
from torch_blue.vi.utils import NoVariablesError, ShapeError, UnsupportedDistributionError


def _model(**kwargs):
    return vi.VISequential(
        vi.VILinear(5, 7, **kwargs), nn.ReLU(), vi.VILinear(7, 3, **kwargs)
    )


def _randomise(model):
    """Spread the means and scales so that the signal-to-noise ratios differ."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("_log_std"):
                parameter.uniform_(-3.0, 0.0)
            else:
                parameter.normal_()
    return model


def _flat(tensors):
    return torch.cat([t.flatten() for t in tensors.values()])


def _normal_kl(mean, log_std, prior_mean=0.0, prior_std=1.0):
    mean, log_std = mean.detach().double(), log_std.detach().double()
    return torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, log_std.exp()),
        torch.distributions.Normal(prior_mean, prior_std),
    )


# ------------------------------------------------------------------ signal to noise
def test_signal_to_noise_by_hand():
    layer = vi.VILinear(2, 2)
    with torch.no_grad():
        layer._weight_mean.copy_(torch.tensor([[1.0, -4.0], [0.0, 0.3]]))
        layer._weight_log_std.copy_(torch.tensor([[0.0, math.log(2.0)], [0.0, -1.0]]))
        layer._bias_mean.copy_(torch.tensor([-0.5, 2.0]))
        layer._bias_log_std.copy_(torch.tensor([math.log(0.25), math.log(4.0)]))
    ratios = signal_to_noise(layer)
    assert list(ratios) == ["weight", "bias"]
    expected_weight = torch.tensor([[1.0, 2.0], [0.0, 0.3 * math.e]])
    assert torch.allclose(ratios["weight"], expected_weight)
    assert torch.allclose(ratios["bias"], torch.tensor([2.0, 0.5]))
    assert not ratios["weight"].requires_grad


def test_signal_to_noise_keys_match_the_deterministic_state_dict():
    model = vi.VISequential(nn.Flatten(), _model())
    ratios = signal_to_noise(model)
    plain = vi.to_deterministic(model).state_dict()
    assert list(ratios) == ["1.0.weight", "1.0.bias", "1.2.weight", "1.2.bias"]
    for key, ratio in ratios.items():
        assert plain[key].shape == ratio.shape


def test_signal_to_noise_of_pruned_and_deterministic_weights():
    layer = vi.VILinear(3, 1, bias=False)
    with torch.no_grad():
        layer._weight_mean.copy_(torch.tensor([[0.0, 2.0, 1.0]]))
        layer._weight_log_std.copy_(torch.tensor([[PRUNED_LOG_STD, PRUNED_LOG_STD, 0.0]]))
    assert signal_to_noise(layer)["weight"].tolist() == [[0.0, math.inf, 1.0]]


def test_signal_to_noise_needs_normal_weights():
    model = vi.VISequential(
        vi.VILinear(2, 2), vi.VILinear(2, 2, variational_distribution=MeanFieldStudentT())
    )
    with pytest.raises(
        UnsupportedDistributionError, match=r"'1\.weight'.*MeanFieldStudentT"
    ):
        signal_to_noise(model)


@pytest.mark.parametrize(
    "function",
    [
        signal_to_noise,
        lambda m: pruning_masks(m, sparsity=0.5),
        lambda m: prune(m, sparsity=0.5),
        compression_report,
    ],
)
def test_models_without_random_variables_are_rejected(function):
    with pytest.raises(NoVariablesError, match="no random variables"):
        function(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match=r"must be an nn\.Module"):
        function({"weight": torch.ones(2)})


# ------------------------------------------------------------------ masks
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.75, 0.9, 0.95, 0.999])
def test_global_masks_prune_exactly_the_lowest_ratios(sparsity):
    model = _randomise(_model())
    masks = pruning_masks(model, sparsity=sparsity)
    keep = _flat(masks)
    ratios = _flat(signal_to_noise(model))
    assert (~keep).sum() == round(sparsity * keep.numel())
    if 0 < (~keep).sum() < keep.numel():
        assert ratios[~keep].max() <= ratios[keep].min()


@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_layer_masks_prune_exactly_per_layer(sparsity):
    model = _randomise(_model())
    masks = pruning_masks(model, sparsity=sparsity, scope="layer")
    ratios = signal_to_noise(model)
    for layer in ("0", "2"):
        keys = [f"{layer}.weight", f"{layer}.bias"]
        keep = torch.cat([masks[k].flatten() for k in keys])
        ratio = torch.cat([ratios[k].flatten() for k in keys])
        assert (~keep).sum() == round(sparsity * keep.numel())
        assert ratio[~keep].max() <= ratio[keep].min()


def test_masks_are_boolean_with_the_variable_shapes():
    model = _model()
    masks = pruning_masks(model, sparsity=0.5)
    for key, ratio in signal_to_noise(model).items():
        assert masks[key].dtype == torch.bool
        assert masks[key].shape == ratio.shape


def test_threshold_prunes_ratios_below_it():
    model = _randomise(_model())
    ratios = signal_to_noise(model)
    threshold = float(_flat(ratios).median())
    for scope in ("global", "layer"):
        masks = pruning_masks(model, threshold=threshold, scope=scope)
        for key, ratio in ratios.items():
            assert torch.equal(masks[key], ratio >= threshold)


def test_ties_are_broken_by_position():
    model = vi.VISequential(vi.VILinear(2, 2, bias=False), vi.VILinear(2, 1, bias=False))
    with torch.no_grad():
        for layer in model:
            layer._weight_mean.fill_(1.0)
            layer._weight_log_std.fill_(0.0)
    masks = pruning_masks(model, sparsity=0.5)  # all six ratios are 1: prune 3
    assert masks["0.weight"].tolist() == [[False, False], [False, True]]
    assert masks["1.weight"].tolist() == [[True, True]]
    assert all(
        torch.equal(a, b)
        for a, b in zip(masks.values(), pruning_masks(model, sparsity=0.5).values())
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of sparsity and threshold"),
        ({"sparsity": 0.5, "threshold": 1.0}, ValueError, "exactly one"),
        ({"sparsity": 1.0}, ValueError, r"sparsity .* must lie in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, ValueError, r"must lie in \[0, 1\)"),
        ({"sparsity": math.nan}, ValueError, r"must lie in \[0, 1\)"),
        ({"sparsity": "90%"}, TypeError, "sparsity must be a number"),
        ({"threshold": -1.0}, ValueError, "threshold must be a finite non-negative"),
        ({"threshold": math.inf}, ValueError, "threshold must be a finite"),
        ({"sparsity": 0.5, "scope": "row"}, ValueError, "scope must be one of"),
    ],
)
def test_invalid_targets_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        pruning_masks(_model(), **kwargs)


def test_nan_parameters_are_reported():
    model = _model()
    with torch.no_grad():
        model[2]._bias_mean[0] = math.nan
    with pytest.raises(ValueError, match=r"'2\.bias' contain NaN"):
        pruning_masks(model, sparsity=0.5)


# ------------------------------------------------------------------ pruning
def test_pruned_weights_have_mean_zero_and_no_noise():
    model = _randomise(_model())
    masks = pruning_masks(model, sparsity=0.6)
    assert prune(model, masks=masks) is model
    for key, keep in masks.items():
        layer, variable = key.split(".")
        mean, log_std = model[int(layer)].get_variational_parameters(variable)
        assert torch.all(mean[~keep] == 0)
        assert torch.all(log_std[~keep].exp() == 0)
        assert torch.all(mean[keep] != 0)


def test_pruned_mean_network_equals_the_masked_mean_network():
    model = _randomise(_model())
    x = torch.randn(4, 5)
    masks = pruning_masks(model, sparsity=0.7)
    layers = [model[0], model[2]]
    masked = [
        (
            layer._weight_mean.detach() * masks[f"{i}.weight"],
            layer._bias_mean.detach() * masks[f"{i}.bias"],
        )
        for i, layer in zip((0, 2), layers)
    ]
    expected = F.linear(F.relu(F.linear(x, *masked[0])), *masked[1])
    prune(model, masks=masks)
    with vi.mean_weights():
        assert torch.allclose(model(x)[0], expected, atol=1e-6)
    plain = vi.to_deterministic(model)
    assert torch.allclose(plain(x), expected, atol=1e-6)
    for key, keep in masks.items():
        assert torch.all(plain.state_dict()[key][~keep] == 0)  # exact zeros


@pytest.mark.parametrize(
    "estimator", ["reparameterization", "local_reparameterization", "flipout"]
)
@pytest.mark.parametrize("return_log_probs", [True, False])
def test_sampled_outputs_ignore_pruned_weights(estimator, return_log_probs):
    # Prune every weight reading input feature 0: the sampled outputs must not
    # depend on it, for every gradient estimator and with or without log-probs.
    layer = vi.VILinear(3, 4, estimator=estimator, return_log_probs=return_log_probs)
    keep = torch.ones(4, 3, dtype=torch.bool)
    keep[:, 0] = False
    prune(layer, masks={"weight": keep})
    x = torch.randn(6, 3)
    changed = x.clone()
    changed[:, 0] = 100.0
    torch.manual_seed(1)
    out = layer(x, samples=5)
    torch.manual_seed(1)
    out_changed = layer(changed, samples=5)
    assert torch.equal(out.as_plain(), out_changed.as_plain())
    assert out.as_plain().std(dim=0).min() > 0  # the kept weights are still random
    if return_log_probs:
        assert torch.isfinite(out.log_probs).all()


def test_prune_not_in_place_leaves_the_model_alone():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, sparsity=0.5, inplace=False)
    assert pruned is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert compression_report(pruned).sparsity == pytest.approx(0.5, abs=1e-3)


def test_pruning_again_keeps_pruned_weights_pruned():
    model = _randomise(_model())
    prune(model, sparsity=0.5)
    first = pruning_masks(model, threshold=1e-30)
    prune(model, sparsity=0.8, scope="layer")
    second = pruning_masks(model, threshold=1e-30)
    for key in first:
        assert not torch.any(second[key] & ~first[key])
    assert compression_report(model).pruned == round(0.8 * 42) + round(0.8 * 24)


def test_reapplying_masks_keeps_fine_tuning_sparse():
    model = _model()
    masks = pruning_masks(model, sparsity=0.5)
    prune(model, masks=masks)
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=50)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    loss = loss_fn(model(x, samples=2), y)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    assert compression_report(model).pruned < round(0.5 * 66)  # training revives them
    prune(model, masks=masks)
    assert compression_report(model).sparsity == pytest.approx(0.5, abs=0.02)


def test_pruned_state_survives_a_state_dict_round_trip():
    model = prune(_randomise(_model()), sparsity=0.75)
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert compression_report(fresh).pruned == compression_report(model).pruned
    assert compression_report(fresh).pruned == round(0.75 * 66)


@pytest.mark.parametrize(
    ("masks", "error", "match"),
    [
        ({"3.weight": torch.ones(1, dtype=torch.bool)}, KeyError, "names no random"),
        ({"0.weight": torch.ones(7, 5)}, TypeError, "must be a boolean tensor"),
        ({"0.weight": [[True] * 5] * 7}, TypeError, "must be a boolean tensor"),
        ({"0.weight": torch.ones(5, 7, dtype=torch.bool)}, ShapeError, "shape"),
        ([("0.weight", None)], TypeError, "masks must be a mapping"),
    ],
)
def test_invalid_masks_raise_and_change_nothing(masks, error, match):
    model = _model()
    good = {"2.bias": torch.zeros(3, dtype=torch.bool)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        prune(model, masks=good | masks if isinstance(masks, dict) else masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prune_needs_exactly_one_target():
    with pytest.raises(ValueError, match="exactly one of sparsity, threshold and masks"):
        prune(_model())
    with pytest.raises(ValueError, match="exactly one"):
        prune(_model(), sparsity=0.5, masks={})


# ------------------------------------------------------------------ report
def test_report_equals_the_sum_of_closed_form_kls():
    model = _randomise(_model(prior=MeanFieldNormal(0.1, 0.5)))
    report = compression_report(model)
    expected = {}
    for index in (0, 2):
        layer = model[index]
        expected[str(index)] = sum(
            _normal_kl(*layer.get_variational_parameters(v), 0.1, 0.5).sum()
            for v in ("weight", "bias")
        )
    assert [layer.name for layer in report.layers] == ["0", "2"]
    for layer in report.layers:
        # float32 prior hyperparameters: agreement to float32 precision
        assert layer.kl == pytest.approx(float(expected[layer.name]), rel=1e-6)
        assert layer.kl_stderr == 0.0
        assert layer.method == "closed form"
    assert report.kl == pytest.approx(float(sum(expected.values())), rel=1e-6)
    assert description_length(model) == report.kl
    loss_fn = vi.AnalyticalKullbackLeiblerLoss(model, Categorical(), 10)
    assert report.kl == pytest.approx(float(loss_fn.prior_matching().detach()), rel=1e-5)


def test_report_counts_pruned_weights_as_removed():
    model = _randomise(_model())
    masks = pruning_masks(model, sparsity=0.6, scope="layer")
    expected = {}
    for index in (0, 2):
        layer = model[index]
        expected[str(index)] = sum(
            _normal_kl(*layer.get_variational_parameters(v))[masks[f"{index}.{v}"]].sum()
            for v in ("weight", "bias")
        )
    prune(model, masks=masks)
    report = compression_report(model)
    for layer, weights in zip(report.layers, (42, 24)):
        assert layer.weights == weights
        assert layer.pruned == round(0.6 * weights)
        assert layer.sparsity == pytest.approx(round(0.6 * weights) / weights)
        assert layer.kl == pytest.approx(float(expected[layer.name]), rel=1e-9)
    assert report.sparsity == pytest.approx((25 + 14) / 66)


def test_monte_carlo_kl_agrees_with_the_closed_form():
    model = prune(_randomise(_model(prior=MeanFieldNormal(0.0, 0.5))), sparsity=0.3)
    exact = compression_report(model)
    torch.manual_seed(0)
    estimate = compression_report(model, method="monte_carlo", mc_samples=400)
    assert estimate.layers[0].method == "Monte Carlo (400 draws)"
    assert estimate.kl_stderr > 0
    # 5 standard errors: a false alarm about once in 1.7 million runs
    assert abs(estimate.kl - exact.kl) < 5 * estimate.kl_stderr


def test_pairs_without_closed_form_fall_back_to_monte_carlo():
    model = vi.VISequential(
        vi.VILinear(3, 2, prior=UniformPrior()),
        vi.VILinear(2, 2, prior=BasicQuietPrior()),
    )
    report = compression_report(model, mc_samples=8)
    assert [layer.method for layer in report.layers] == [
        "closed form",
        "Monte Carlo (8 draws)",
    ]
    assert math.isfinite(report.kl)
    with pytest.raises(UnsupportedDistributionError, match="no closed-form KL"):
        compression_report(model, method="closed_form")


def test_report_works_for_non_normal_variational_families():
    layer = vi.VILinear(3, 2, variational_distribution=MeanFieldStudentT())
    report = compression_report(layer, mc_samples=4)
    assert report.pruned == 0
    assert report.layers[0].name == ""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "exact"}, "method must be one of"),
        ({"mc_samples": 1}, "mc_samples must be an int of at least 2"),
        ({"mc_samples": 10.0}, "mc_samples must be an int"),
    ],
)
def test_invalid_report_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compression_report(_model(), **kwargs)


def test_markdown_table():
    model = prune(_model(), sparsity=0.5, scope="layer")
    table = compression_report(model).to_markdown()
    lines = table.splitlines()
    assert lines[0].startswith("| layer | weights | kept | sparsity | KL (nats) |")
    assert lines[2].startswith("| 0 | 42 | 21 | 50.0% |")
    assert lines[3].startswith("| 2 | 24 | 12 | 50.0% |")
    assert lines[4].startswith("| **total** | 66 | 33 | 50.0% |")
    assert str(compression_report(model)) == table


def test_per_weight_prior_hyperparameters_fall_back_to_monte_carlo_when_pruned():
    layer = _randomise(vi.VILinear(4, 3, bias=False))
    prior_mean = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)
    layer.prior["weight"].mean = prior_mean  # one prior mean per weight
    assert compression_report(layer).layers[0].method == "closed form"
    masks = pruning_masks(layer, sparsity=0.5)
    mean, log_std = layer.get_variational_parameters("weight")
    exact = float(_normal_kl(mean, log_std, prior_mean.double())[masks["weight"]].sum())
    prune(layer, masks=masks)
    torch.manual_seed(0)
    report = compression_report(layer, mc_samples=2000)
    assert report.layers[0].method == "Monte Carlo (2000 draws)"
    assert abs(report.kl - exact) < 5 * report.kl_stderr
    with pytest.raises(UnsupportedDistributionError, match="per-weight hyperparameters"):
        compression_report(layer, method="closed_form")


def test_pruned_half_precision_log_probs_stay_finite():
    # Each pruned weight adds 1000 nats to log q: 900 of them overflow float16.
    torch.manual_seed(0)
    layer = prune(vi.VILinear(32, 32).half(), sparsity=0.9)
    out = layer(torch.randn(2, 32).half(), samples=2)
    assert out.log_probs.dtype == torch.float32
    assert torch.isfinite(out.log_probs).all()
    pruned = int((layer._weight_log_std == PRUNED_LOG_STD).sum())
    assert (out.log_probs[:, 1] > 999 * pruned).all()
