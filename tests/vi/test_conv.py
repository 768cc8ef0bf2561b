import pytest
import torch
from torch import nn

from torch_blue.vi import VIConv1d, VIConv2d, VIConv3d
from torch_blue.vi.utils import ShapeError

CASES = [
    (VIConv1d, nn.Conv1d, (2, 4, 9)),
    (VIConv2d, nn.Conv2d, (2, 4, 7, 6)),
    (VIConv3d, nn.Conv3d, (2, 4, 5, 4, 6)),
]
OPTIONS = [
    {},
    {"stride": 2, "padding": 1},
    {"padding": "same", "dilation": 2},
    {"padding": "valid", "bias": False},
    {"groups": 2, "padding": 1},
    {"padding": 1, "padding_mode": "reflect"},
    {"padding": 1, "padding_mode": "circular"},
    {"padding": "same", "padding_mode": "replicate"},
]


def _twin(vi_layer, nn_cls, **options):
    reference = nn_cls(4, 6, 3, **options)
    with torch.no_grad():
        reference.weight.copy_(vi_layer._weight_mean)
        if reference.bias is not None:
            reference.bias.copy_(vi_layer._bias_mean)
        for name, parameter in vi_layer.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-40.0)
    return reference


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
@pytest.mark.parametrize("options", OPTIONS)
def test_matches_torch_conv_with_zero_variance(vi_cls, nn_cls, shape, options):
    layer = vi_cls(4, 6, 3, **options)
    reference = _twin(layer, nn_cls, **options)
    x = torch.randn(shape)
    out = layer(x, samples=2)
    expected = reference(x)
    assert out.shape == (2, *expected.shape)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-5)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_unbatched_input(vi_cls, nn_cls, shape):
    layer = vi_cls(4, 6, 3)
    assert layer(torch.randn(shape[1:]), samples=3).shape[:2] == (3, 6)


@pytest.mark.parametrize(("vi_cls", "nn_cls", "shape"), CASES)
def test_wrong_channels_raise(vi_cls, nn_cls, shape):
    bad = list(shape)
    bad[1] = 5
    with pytest.raises(ShapeError, match=rf"{vi_cls.__name__}\(in_channels=4\)"):
        vi_cls(4, 6, 3)(torch.randn(bad), samples=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": 3}, "divisible by groups"),
        ({"padding_mode": "mirror"}, "padding_mode must be one of"),
        ({"padding": "full"}, "padding must be 'same', 'valid'"),
        ({"padding": "same", "stride": 2}, "needs stride 1"),
        ({"padding": -1}, "non-negative"),
        ({"stride": 0}, "stride must be a positive int or a tuple of 2"),
        ({"dilation": (1,)}, "dilation must be a positive int or a tuple of 2"),
        ({"padding": (1, 1, 1)}, "padding must be a non-negative int or a tuple of 2"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIConv2d(4, 6, 3, **kwargs)


def test_kernel_size_length_is_checked_at_construction():
    # nn.Conv2d accepts (3, 3, 3) and fails at the first forward.
    with pytest.raises(ValueError, match="kernel_size must be a positive int or a tuple"):
        VIConv2d(4, 6, (3, 3, 3))


def test_trains_a_few_steps():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    target = x.mean(dim=(1, 2, 3))
    model = VIConv2d(1, 1, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        loss = (model(x, samples=4).flatten(1) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.3 * first


def test_repr():
    text = repr(VIConv2d(4, 6, 3, stride=2, padding=1, bias=False))
    assert "4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False" in text
