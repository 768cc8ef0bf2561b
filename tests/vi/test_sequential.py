from collections import OrderedDict

import pytest
import torch
from torch import nn

from torch_blue.vi import VIConv2d, VILinear, VIResidualConnection, VISequential
from torch_blue.vi.utils import ShapeError


def test_plain_modules_see_one_sample_at_a_time():
    model = VISequential(VIConv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), VILinear(2 * 4 * 4, 3))
    assert model(torch.randn(5, 1, 6, 6), samples=4).shape == (4, 5, 3)


def test_ordered_dict_and_indexing():
    model = VISequential(
        OrderedDict(first=VILinear(3, 4), act=nn.Tanh(), last=VILinear(4, 2))
    )
    assert isinstance(model.first, VILinear)
    head = model[:2]
    assert isinstance(head, VISequential)
    assert head(torch.randn(5, 3), samples=2).shape == (2, 5, 4)


def test_non_module_entry_raises():
    with pytest.raises(TypeError, match="entry '1' is a int"):
        VISequential(VILinear(2, 2), 3)


def test_disagreeing_return_log_probs_raises():
    with pytest.raises(ValueError, match="disagree on return_log_probs"):
        VISequential(VILinear(2, 2), VILinear(2, 2, return_log_probs=False))


def test_return_log_probs_taken_from_children():
    model = VISequential(VILinear(2, 2, return_log_probs=False), nn.ReLU())
    assert model.return_log_probs is False


def test_residual_adds_the_input():
    block = VIResidualConnection(VILinear(3, 3), nn.Tanh())
    with torch.no_grad():
        for name, parameter in block.named_parameters():
            parameter.fill_(-40.0 if name.endswith("log_std") else 0.0)
    x = torch.randn(5, 3)
    assert torch.allclose(block(x, samples=2), x.expand(2, 5, 3))


def test_residual_shape_mismatch_raises():
    block = VIResidualConnection(VILinear(3, 2))
    with pytest.raises(
        ShapeError, match=r"output shape \(5, 2\) must equal the input shape"
    ):
        block(torch.randn(5, 3), samples=2)
