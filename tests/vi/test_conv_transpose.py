import pytest
import torch
from torch import nn
from torch.testing import assert_close

from torch_blue import vi
from torch_blue.vi import KullbackLeiblerLoss, VIModule, VISequential
from torch_blue.vi.conv_transpose import (
    VIConvTranspose1d,
    VIConvTranspose2d,
    VIConvTranspose3d,
)
from torch_blue.vi.distributions import MeanFieldNormal, NonBayesian
from torch_blue.vi.utils import ShapeError
from torch_blue.vi.utils.convert import convert_to_vimodule

CASES = [
    (VIConvTranspose1d, nn.ConvTranspose1d, (2, 4, 5)),
    (VIConvTranspose2d, nn.ConvTranspose2d, (2, 4, 4, 3)),
    (VIConvTranspose3d, nn.ConvTranspose3d, (2, 4, 3, 2, 3)),
]
OPTIONS = [
    {},
    {"stride": 2},
    {"stride": 2, "padding": 1, "output_padding": 1},
    {"stride": 3, "dilation": 2, "output_padding": 2},
    {"stride": 1, "dilation": 3, "output_padding": 2, "padding": 2},
    {"groups": 2, "bias": False},
    {"groups": 2, "stride": 2, "dilation": 2, "output_padding": 1},
]
ESTIMATORS = ["reparameterization", "local_reparameterization", "flipout", "shared_flipout"]


def _freeze_to_mean(layer):
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-30.0)


def _mean_twin(layer):
    reference = layer._to_torch()
    with torch.no_grad():
        reference.weight.copy_(layer._weight_mean)
        if reference.bias is not None:
            reference.bias.copy_(layer._bias_mean)
    return reference


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
@pytest.mark.parametrize("options", OPTIONS)
def test_matches_torch_with_zero_variance(vi_cls, nn_cls, shape, options):
    layer = vi_cls(4, 6, 3, **options)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer)
    assert type(reference) is nn_cls
    assert reference.weight.shape == layer._weight_mean.shape
    x = torch.randn(shape)
    expected = reference(x)
    out = layer(x, samples=2)
    assert out.shape == (2, *expected.shape)
    for lane in out:
        assert_close(lane, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_output_size_picks_the_same_sizes_as_torch(vi_cls, nn_cls, shape):
    layer = vi_cls(4, 6, 3, stride=3, padding=1)
    _freeze_to_mean(layer)
    reference = _mean_twin(layer)
    x = torch.randn(shape)
    smallest = reference(x).shape[2:]
    for extra in range(3):  # stride 3: output_padding 0, 1 or 2
        size = [n + extra for n in smallest]
        expected = reference(x, output_size=size)
        assert_close(layer(x, output_size=size, samples=2)[0], expected, atol=1e-5, rtol=0)
        # The full (N, C, *spatial) form, positional, as torch accepts it.
        full = [*shape[:1], 6, *size]
        assert layer(x, full, samples=2).shape == (2, *expected.shape)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_bad_output_size_raises(vi_cls, nn_cls, shape):
    layer = vi_cls(4, 6, 3, stride=2)
    x = torch.randn(shape)
    too_big = [n + 5 for n in layer._to_torch()(x).shape[2:]]
    with pytest.raises(ShapeError, match=rf"{vi_cls.__name__}.*valid sizes range"):
        layer(x, output_size=too_big, samples=2)
    with pytest.raises(ShapeError, match="output_size must hold"):
        layer(x, output_size=[7] * (len(shape) + 1), samples=2)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_unbatched_input(vi_cls, nn_cls, shape):
    layer = vi_cls(4, 6, 3, stride=2)
    x = torch.randn(shape[1:])
    out = layer(x, samples=3)
    assert out.shape == (3, *layer._to_torch()(x).shape)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_mean_weights_equal_to_deterministic(vi_cls, nn_cls, shape):
    layer = vi_cls(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    plain = vi.to_deterministic(layer)
    assert type(plain) is nn_cls
    assert not any(isinstance(m, VIModule) for m in plain.modules())
    x = torch.randn(shape)
    with vi.mean_weights():
        out = layer(x)
    assert out.shape == (1, *plain(x).shape)
    assert torch.equal(out[0], plain(x))


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_convert_keeps_weights_and_reproduces_torch(vi_cls, nn_cls, shape):
    module = nn_cls(4, 6, 3, stride=2, padding=1, output_padding=1, dilation=2)
    x = torch.randn(shape)
    expected = module(x)
    converted = convert_to_vimodule(
        module, keep_weights=True, variational_distribution=NonBayesian(),
        prior=NonBayesian(),
    )  # fmt: skip
    assert type(converted) is vi_cls
    assert converted.output_padding == module.output_padding
    assert_close(converted(x, samples=1)[0], expected)
    assert type(convert_to_vimodule(nn_cls(4, 6, 3))) is vi_cls


def test_trains_with_kl_loss():
    torch.manual_seed(0)
    x = torch.randn(16, 2, 4)
    target = nn.ConvTranspose1d(2, 1, 3, stride=2)(x).detach()
    model = VIConvTranspose1d(2, 1, 3, stride=2)
    loss_fn = KullbackLeiblerLoss(MeanFieldNormal(std=0.1), dataset_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(x, samples=4), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.2 * sum(losses[:5])


def test_lanes_differ_and_log_probs_score_the_drawn_weights():
    # One-hot inputs of length 1 read the weights off the output: the zero input
    # gives the bias, input channel i gives weight[i] + bias.
    layer = VIConvTranspose1d(2, 3, 2)
    x = torch.cat([torch.zeros(1, 2, 1), torch.eye(2).unsqueeze(-1)])
    out = layer(x, samples=4)
    assert out.log_probs.shape == (4, 2)
    assert not torch.allclose(out[0], out[1])
    for lane, log_probs in zip(out.as_plain(), out.log_probs):
        bias = lane[0, :, 0]
        weight = lane[1:] - lane[0]
        expected = layer.get_log_probs(weight, "weight") + layer.get_log_probs(bias, "bias")
        assert_close(log_probs, expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradients_reach_every_variational_parameter(estimator):
    layer = VIConvTranspose2d(4, 6, 3, stride=2, groups=2, estimator=estimator)
    out = layer(torch.randn(2, 4, 3, 3), samples=3)
    (out.square().sum() + out.log_probs.sum()).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("estimator", ESTIMATORS[1:])
@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_fast_estimators_reproduce_the_mean_network(estimator, vi_cls, nn_cls, shape):
    layer = vi_cls(4, 6, 3, stride=2, groups=2, estimator=estimator)
    _freeze_to_mean(layer)
    x = torch.randn(shape)
    out = layer(x, samples=2)
    assert_close(out[1], _mean_twin(layer)(x), atol=1e-5, rtol=1e-5)


def _moment_layer(estimator, dims):
    # Output-padding, dilation and groups all change which weights meet an output.
    cls = VIConvTranspose1d if dims == 1 else VIConvTranspose2d
    layer = cls(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                dilation=2, estimator=estimator,
                variational_distribution=MeanFieldNormal(std=3.0))  # fmt: skip
    x = torch.randn(3, 2, *(4 if dims == 1 else 3,) * dims)
    return layer, x


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_give_the_per_example_moments_of_weight_sampling(estimator, dims):
    layer, x = _moment_layer(estimator, dims)
    # shared_flipout's lanes share a perturbation per call: one lane per chunk.
    chunk_size, n = (1, 4_000) if estimator == "shared_flipout" else (None, 20_000)
    with torch.no_grad():
        out = layer(x, samples=n, chunk_size=chunk_size).as_plain()
        op = layer._conv
        args = (layer.stride, layer.padding, layer.output_padding, layer.groups,
                layer.dilation)  # fmt: skip
        mean = op(x, layer._weight_mean, layer._bias_mean, *args)
        var = op(x**2, layer._weight_log_std.exp() ** 2,
                 layer._bias_log_std.exp() ** 2, *args)  # fmt: skip
    # 5 standard errors: sd/sqrt(n) for the mean, var*sqrt(2/n) for the variance.
    assert torch.all((out.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((out.var(0) - var).abs() < 5 * var * (2 / n) ** 0.5)


def _exact_covariance(layer, x):
    """Covariance of all output elements of one example under weight sampling."""
    args = (layer.stride, layer.padding, layer.output_padding, layer.groups,
            layer.dilation)  # fmt: skip

    def outputs(weight, bias):
        return layer._conv(x, weight, bias, *args).flatten()

    with torch.no_grad():
        jw, jb = torch.autograd.functional.jacobian(
            outputs, (layer._weight_mean, layer._bias_mean)
        )
        jw, jb = jw.flatten(1), jb.flatten(1)
        var_w = layer._weight_log_std.exp().flatten() ** 2
        var_b = layer._bias_log_std.exp() ** 2
    return (jw * var_w) @ jw.T + (jb * var_b) @ jb.T


@pytest.mark.parametrize("estimator", ["reparameterization", "flipout"])
def test_flipout_keeps_the_within_example_covariance_of_weight_sampling(estimator):
    # Flipout's signs are drawn per example and channel, so all positions of one
    # example see the same sign pattern: the covariance between output positions is
    # that of weight sampling. (Signs per position would break it.)
    layer, x = _moment_layer(estimator, 1)
    x = x[:1]
    n = 20_000
    with torch.no_grad():
        out = layer(x, samples=n).as_plain().flatten(1)
    covariance = _exact_covariance(layer, x)
    centred = out - out.mean(0)
    empirical = centred.T @ centred / (n - 1)
    # Standard error of a sample covariance of Normals: sqrt((s_aa s_bb + s_ab^2) / n).
    diag = covariance.diagonal()
    se = ((diag[:, None] * diag[None, :] + covariance**2) / n).sqrt()
    assert torch.all((empirical - covariance).abs() < 5 * se + 1e-6)
    off_diagonal = covariance - torch.diag(diag)
    assert off_diagonal.abs().max() > 10 * se.max()  # the test has teeth


def test_inside_a_model_and_under_a_plain_sequential():
    model = VISequential(VIConvTranspose2d(4, 2, 2, stride=2), nn.ReLU(),
                         vi.VIConv2d(2, 3, 3, padding=1))  # fmt: skip
    assert model(torch.randn(2, 4, 3, 3), samples=5).shape == (5, 2, 3, 6, 6)
    chain = nn.Sequential(VIConvTranspose2d(4, 2, 2, stride=2), vi.VIConv2d(2, 3, 1))
    out = chain(torch.randn(2, 4, 3, 3))
    assert out.shape == (10, 2, 3, 6, 6) and out.log_probs.shape == (10, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"groups": 4}, ValueError, "divisible by groups"),
        ({"padding_mode": "reflect"}, ValueError, "only padding_mode='zeros'"),
        ({"padding": "same"}, ValueError, "string paddings"),
        ({"padding": -1}, ValueError, "padding must be a non-negative int"),
        ({"stride": 0}, ValueError, "stride must be a positive int"),
        ({"kernel_size": (3, 3, 3)}, ValueError, "kernel_size must be"),
        ({"stride": 2, "output_padding": 2}, ValueError, "output_padding must be smaller"),
        ({"in_channels": 0}, ValueError, "in_channels must be a positive int"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    arguments = {"in_channels": 6, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=rf"VIConvTranspose2d: .*{match}"):
        VIConvTranspose2d(**arguments)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_wrong_input_shape_raises(vi_cls, nn_cls, shape):
    bad = list(shape)
    bad[1] = 5
    with pytest.raises(ShapeError, match=rf"{vi_cls.__name__}\(in_channels=4\).*got"):
        vi_cls(4, 6, 3)(torch.randn(bad), samples=2)
    with pytest.raises(ShapeError, match=rf"{vi_cls.__name__}\(in_channels=4\)"):
        vi_cls(4, 6, 3)(torch.randn(4), samples=2)


def test_repr():
    text = repr(VIConvTranspose2d(4, 6, 3, stride=2, output_padding=1, bias=False))
    assert "4, 6, kernel_size=(3, 3), stride=(2, 2), output_padding=(1, 1)" in text
    assert "bias=False" in text and "prior=MeanFieldNormal" in text
