"""CUDA checks; skipped where no GPU is available (CI has none)."""

import pytest
import torch
from torch import nn

from torch_blue import vi
from torch_blue.vi.distributions import (
    BasicQuietPrior,
    Categorical,
    MeanFieldNormal,
    MeanFieldStudentT,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _model(**kwargs):
    return vi.VISequential(
        vi.VIConv2d(1, 4, 3, padding=1, **kwargs),
        nn.ReLU(),
        nn.Flatten(),
        vi.VILinear(4 * 6 * 6, 3, **kwargs),
    ).cuda()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"variational_distribution": MeanFieldStudentT()}, {"prior": BasicQuietPrior()}],
)
def test_training_step_on_cuda(kwargs):
    torch.manual_seed(0)
    model = _model(**kwargs)
    x = torch.randn(8, 1, 6, 6, device="cuda")
    y = torch.randint(0, 3, (8,), device="cuda")
    out = model(x, samples=4)
    assert out.is_cuda and out.log_probs.is_cuda
    loss = vi.KullbackLeiblerLoss(Categorical(), 100)(out, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters())


def test_analytical_loss_on_cuda():
    model = _model(return_log_probs=False)
    loss_fn = vi.AnalyticalKullbackLeiblerLoss(model, Categorical(), 100)
    out = model(torch.randn(8, 1, 6, 6, device="cuda"), samples=2)
    loss = loss_fn(out, torch.randint(0, 3, (8,), device="cuda"))
    assert loss.is_cuda and torch.isfinite(loss)


def test_regression_loss_and_moments_on_cuda():
    torch.manual_seed(0)
    layer = vi.VILinear(3, 2, bias=False).cuda()
    draws = layer(torch.eye(3, device="cuda"), samples=20_000).as_plain().transpose(1, 2)
    std = layer._weight_log_std.exp()
    assert torch.all((draws.mean(0) - layer._weight_mean).abs() < 5 * std / 20_000**0.5)
    target = torch.randn(3, 2, device="cuda")
    loss = vi.KullbackLeiblerLoss(MeanFieldNormal(), 10)(
        layer(torch.eye(3, device="cuda")), target
    )
    assert loss.is_cuda


def test_state_dict_moves_between_devices():
    model = _model()
    cpu_model = vi.VISequential(
        vi.VIConv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), vi.VILinear(144, 3)
    )
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    assert torch.equal(cpu_model[0]._weight_mean, model[0]._weight_mean.cpu())


@pytest.mark.parametrize("length", [8, 96])
def test_attention_core_matches_the_weights_path_on_cuda(length):
    # The core calls the fused kernel once for all samples on CUDA; torch's weights
    # path (need_weights=True) reads the same draws for the same seed.
    attention = vi.VIMultiheadAttention(16, 2).cuda()
    x = torch.randn(3, length, 16, device="cuda", requires_grad=True)
    padding = torch.zeros(3, length, dtype=torch.bool, device="cuda")
    padding[0, length // 2 :] = True
    results = []
    for need_weights in (False, True):
        attention.zero_grad()
        x.grad = None
        torch.manual_seed(0)
        out, _ = attention(
            x, x, x, samples=4, need_weights=need_weights, key_padding_mask=padding
        )
        out.pow(2).sum().backward()
        grads = [p.grad.clone() for p in attention.parameters()]
        results.append((out.detach(), [x.grad.clone(), *grads]))
    (core, core_grads), (weights_path, path_grads) = results
    torch.testing.assert_close(core, weights_path, atol=1e-4, rtol=1e-3)
    for found, expected in zip(core_grads, path_grads):
        torch.testing.assert_close(found, expected, atol=1e-3, rtol=1e-3)
