import pytest
import torch
from torch import nn

from torch_blue.vi import VILinear
from torch_blue.vi.utils import ShapeError


def _freeze_to_mean(layer):
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("log_std"):
                parameter.fill_(-40.0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("input_shape", [(3,), (5, 3), (2, 5, 3)])
def test_matches_nn_linear_with_zero_variance(bias, input_shape):
    layer = VILinear(3, 4, bias=bias)
    _freeze_to_mean(layer)
    reference = nn.Linear(3, 4, bias=bias)
    with torch.no_grad():
        reference.weight.copy_(layer._weight_mean)
        if bias:
            reference.bias.copy_(layer._bias_mean)
    x = torch.randn(input_shape)
    out = layer(x, samples=3)
    assert out.shape == (3, *reference(x).shape)
    assert torch.allclose(out, reference(x).expand_as(out), atol=1e-6)


def test_no_bias_variable():
    layer = VILinear(3, 2, bias=False)
    assert layer.bias is None
    assert "_bias_mean" not in dict(layer.named_parameters())


def test_trains_a_few_steps():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    layer = VILinear(3, 1)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = (layer(x, samples=4) - y).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_wrong_input_width_raises_naming_module_and_shape():
    with pytest.raises(ShapeError, match=r"VILinear\(in_features=3\).*got shape \(5, 4\)"):
        VILinear(3, 2)(torch.randn(5, 4), samples=2)


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_sizes_raise(value):
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        VILinear(value, 2)


def test_repr_names_sizes_and_distributions():
    text = repr(VILinear(3, 2))
    assert "in_features=3, out_features=2, bias=True" in text
    assert "prior=MeanFieldNormal(mean=0, std=1)" in text
