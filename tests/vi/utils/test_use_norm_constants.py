import math

import pytest
import torch

from torch_blue.vi.distributions import MeanFieldNormal
from torch_blue.vi.utils import norm_constants, use_norm_constants
from torch_blue.vi.utils.use_norm_constants import norm_constants_enabled


def test_default_is_enabled():
    assert norm_constants_enabled() is True


@pytest.mark.parametrize("mode", [False, True])
def test_use_norm_constants_sets_switch(mode):
    use_norm_constants(mode)
    assert norm_constants_enabled() is mode


@pytest.mark.parametrize("mode", [0, 1, "False", None, torch.tensor(True)])
def test_use_norm_constants_rejects_non_bool(mode):
    with pytest.raises(TypeError, match="mode must be a bool"):
        use_norm_constants(mode)
    assert norm_constants_enabled() is True


@pytest.mark.parametrize("outer", [False, True])
@pytest.mark.parametrize("inner", [False, True])
def test_context_sets_and_restores(outer, inner):
    use_norm_constants(outer)
    with norm_constants(inner):
        assert norm_constants_enabled() is inner
    assert norm_constants_enabled() is outer


def test_context_restores_when_body_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with norm_constants(False):
            assert norm_constants_enabled() is False
            raise RuntimeError("boom")
    assert norm_constants_enabled() is True


def test_context_rejects_non_bool_and_keeps_value():
    use_norm_constants(False)
    with pytest.raises(TypeError, match="mode must be a bool"):
        with norm_constants(1):
            pass  # pragma: no cover
    assert norm_constants_enabled() is False


def test_switch_changes_log_prob_by_constant():
    zero = torch.zeros(1)
    dist = MeanFieldNormal()
    with_constants = dist.log_prob(zero, (zero, zero))
    with norm_constants(False):
        without = dist.log_prob(zero, (zero, zero))
    assert torch.allclose(
        with_constants - without, torch.tensor(-0.5 * math.log(2 * math.pi))
    )
