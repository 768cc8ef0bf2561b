"""State dicts written by upstream torch_blue 1.1 load into the same architecture.

The fixtures in tests/data were written by scripts/tools/make_upstream_checkpoint.py with
upstream torch_blue 1.1.0 installed.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from torch_blue import vi

DATA = Path(__file__).resolve().parents[1] / "data"


def _mlp():
    return vi.VISequential(vi.VILinear(4, 8), nn.ReLU(), vi.VILinear(8, 3, bias=False))


def _cnn():
    return vi.VISequential(
        vi.VIConv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), vi.VILinear(2 * 5 * 5, 3)
    )


@pytest.mark.parametrize(("name", "build", "shape"), [
    ("upstream_1.1_mlp.pt", _mlp, (6, 4)), ("upstream_1.1_cnn.pt", _cnn, (6, 1, 5, 5))
])  # fmt: skip
def test_upstream_checkpoint_loads_strictly_and_runs(name, build, shape):
    state = torch.load(DATA / name, weights_only=True)
    model = build()
    model.load_state_dict(state, strict=True)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)
    out = model(torch.randn(shape), samples=3)
    assert out.shape == (3, 6, 3) and torch.isfinite(out.log_probs).all()
