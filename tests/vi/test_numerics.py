"""Property tests (Hypothesis): finite inputs give finite outputs, log-probs and grads.

For every layer family and gradient estimator, in float32 and under CPU autocast to
bfloat16 and float16: any input whose entries are finite and at most ``BOUND[dtype]``
in magnitude must give finite sampled outputs, finite log-probabilities and finite
gradients of a loss on them. The bounds keep the exact results far inside each
dtype's range while reaching where a naive formula overflows: ``x**2`` overflows
float16 from 256 and float32 from 1.9e19 (the local reparameterisation's variance).
Hypothesis runs derandomised, so the examples are the same on every run.
"""

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from torch_blue import vi

#: Largest input magnitude per compute dtype, and per family where it must be lower:
#: attention squares its inputs in the scores (as torch's own does), norms their
#: deviations (torch's float32 batch and layer norms compute the variance).
BOUND = {torch.float32: 1e20, torch.bfloat16: 1e20, torch.float16: 2e3}
FAMILY_BOUND = {
    "transformer": {torch.float32: 1e6, torch.bfloat16: 1e6, torch.float16: 8.0},
    "batchnorm": {torch.float32: 1e15, torch.bfloat16: 1e15, torch.float16: 2e3},
    "layernorm": {torch.float32: 1e15, torch.bfloat16: 1e15, torch.float16: 2e3},
}

#: family -> (layer factory taking an estimator, input shape, estimators)
FAMILIES: dict[str, tuple[Callable[[str], nn.Module], tuple[int, ...], tuple[str, ...]]] = {
    "linear": (
        lambda e: vi.VILinear(5, 3, estimator=e),
        (4, 5),
        ("reparameterization", "local_reparameterization", "flipout", "shared_flipout"),
    ),
    "conv2d": (
        lambda e: vi.VIConv2d(2, 3, 3, padding=1, estimator=e),
        (2, 2, 4, 4),
        ("reparameterization", "local_reparameterization", "flipout", "shared_flipout"),
    ),
    "conv_transpose1d": (
        lambda e: vi.VIConvTranspose1d(2, 3, 3, estimator=e),
        (2, 2, 5),
        ("reparameterization", "local_reparameterization", "flipout", "shared_flipout"),
    ),
    "lstm": (
        lambda e: vi.VILSTM(3, 4, batch_first=True, estimator=e),
        (2, 3, 3),
        ("reparameterization", "flipout", "shared_flipout"),
    ),
    "batchnorm": (lambda e: vi.VIBatchNorm1d(5), (4, 5), ("reparameterization",)),
    "layernorm": (lambda e: vi.VILayerNorm(5), (4, 5), ("reparameterization",)),
    "transformer": (
        lambda e: vi.VITransformerEncoderLayer(4, 2, 8, dropout=0.0, estimator=e),
        (2, 3, 4),
        ("reparameterization", "local_reparameterization", "flipout", "shared_flipout"),
    ),
}
CASES = [
    pytest.param(family, estimator, dtype, id=f"{family}-{estimator}-{str(dtype)[6:]}")
    for family, (_, _, estimators) in FAMILIES.items()
    for estimator in estimators
    for dtype in (torch.float32, torch.bfloat16, torch.float16)
]


def _first_tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # (an LSTM's output)


@pytest.mark.parametrize(("family", "estimator", "dtype"), CASES)
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_finite_inputs_give_finite_outputs_log_probs_and_gradients(
    family, estimator, dtype, data
):
    make, shape, _ = FAMILIES[family]
    bound = FAMILY_BOUND.get(family, BOUND)[dtype]
    # magnitudes spread over the whole range, with signs and exact zeros
    exponent = st.floats(min_value=-3.0, max_value=math.log10(bound))
    entry = st.tuples(st.sampled_from([-1.0, 0.0, 1.0]), exponent).map(
        lambda pair: pair[0] * 10.0 ** pair[1]
    )
    size = math.prod(shape)
    values = data.draw(st.lists(entry, min_size=size, max_size=size))
    torch.manual_seed(0)
    layer = make(estimator)
    x = torch.tensor(values, dtype=torch.float32).view(shape)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        output = layer(x, samples=3)
        samples = _first_tensor(output)
        log_probs = samples.log_probs
        loss = samples.float().mean() + log_probs.float().mean()
    loss.backward()
    assert torch.isfinite(samples.float()).all()
    assert torch.isfinite(log_probs).all()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
