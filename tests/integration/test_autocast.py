"""Mixed precision: bf16 autocast on CPU trains, log-prob and KL math stays float32."""

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import Categorical

ESTIMATORS = ["reparameterization", "local_reparameterization", "flipout"]


def _model(estimator: str) -> nn.Module:
    return vi.VISequential(
        vi.VIConv1d(2, 4, 3, padding=1, estimator=estimator),
        nn.ReLU(),
        nn.Flatten(),
        vi.VILinear(4 * 8, 16, estimator=estimator),
        nn.ReLU(),
        vi.VILinear(16, 3, bias=False, estimator=estimator),
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_bf16_autocast_trains_without_nans(estimator):
    torch.manual_seed(0)
    model = _model(estimator)
    x = torch.randn(64, 2, 8)
    y = (x[:, 0].sum(-1) > 0).long() + (x[:, 1].sum(-1) > 1).long()
    loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, samples=4)
            loss = loss_fn(out, y)
        assert out.log_probs.dtype == torch.float32  # densities never in bf16
        assert loss.dtype == torch.float32
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(losses[-5:]) < sum(losses[:5])


def test_bf16_autocast_runs_the_last_layer_in_bf16():
    # Layers without a bias run their matmul under autocast; the outputs show it.
    layer = vi.VILinear(8, 4, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(5, 8), samples=2)
    assert out.dtype == torch.bfloat16
    assert out.log_probs.dtype == torch.float32
