"""The fused local reparameterisation gives the values and gradients of the formulas."""

from typing import Optional

import pytest
import torch

from torch_blue import vi
from torch_blue.vi._fused_linear import LocalLinear, local_linear_reference

IN, OUT = 6, 4


def parameters(bias: bool, batch: tuple = ()) -> list[Optional[torch.Tensor]]:
    def make(*shape: int, shift: float = 0.0) -> torch.Tensor:
        t = torch.randn(*batch, *shape, dtype=torch.float64) * 0.5 + shift
        return t.requires_grad_()

    weight = [make(OUT, IN), make(OUT, IN, shift=-1.0)]
    return weight + ([make(OUT), make(OUT, shift=-1.0)] if bias else [None, None])


def fused(*args: Optional[torch.Tensor]) -> torch.Tensor:
    return LocalLinear.apply(*args)[0]


def check(
    got: torch.Tensor, want: torch.Tensor, inputs: list[Optional[torch.Tensor]]
) -> None:
    torch.testing.assert_close(got, want)
    weight = torch.randn_like(want)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got_grads = torch.autograd.grad((got * weight).sum(), wanted)
    want_grads = torch.autograd.grad((want * weight).sum(), wanted)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lanes", [(), (3,)], ids=["own-input", "shared-input"])
def test_matches_the_formulas(bias: bool, lanes: tuple) -> None:
    # "shared-input": extra leading noise dimensions are samples sharing the input.
    torch.manual_seed(0)
    x = torch.randn(5, 2, IN, dtype=torch.float64, requires_grad=True)
    params = parameters(bias)
    noise = torch.randn(*lanes, 5, 2, OUT, dtype=torch.float64)
    inputs = [x, *params, noise]
    check(fused(*inputs), local_linear_reference(*inputs), [x, *params])


@pytest.mark.parametrize("shared", [True, False])
def test_vmap_rule_matches_the_formulas(shared: bool) -> None:
    torch.manual_seed(1)
    params = parameters(bias=True)
    x = torch.randn(*(() if shared else (3,)), 5, IN, dtype=torch.float64)
    x.requires_grad_()
    noise = torch.randn(3, 5, OUT, dtype=torch.float64)
    in_dims = (None if shared else 0, None, None, None, None, 0)
    got = torch.vmap(fused, in_dims=in_dims)(x, *params, noise)
    want = torch.vmap(local_linear_reference, in_dims=in_dims)(x, *params, noise)
    check(got, want, [x, *params])


def test_vmap_over_parameters_falls_back_to_the_formulas() -> None:
    torch.manual_seed(2)
    params = parameters(bias=True, batch=(3,))
    x = torch.randn(5, IN, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(3, 5, OUT, dtype=torch.float64)
    in_dims = (None, 0, 0, 0, 0, 0)
    got = torch.vmap(fused, in_dims=in_dims)(x, *params, noise)
    want = torch.vmap(local_linear_reference, in_dims=in_dims)(x, *params, noise)
    check(got, want, [x, *params])


def test_second_derivatives_match() -> None:
    torch.manual_seed(3)
    x = torch.randn(4, IN, dtype=torch.float64, requires_grad=True)
    params = parameters(bias=True)
    noise = torch.randn(2, 4, OUT, dtype=torch.float64)
    results = []
    for function in (fused, local_linear_reference):
        out = function(x, *params, noise)
        grads = torch.autograd.grad(out.tanh().sum(), [x, *params], create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        results.append(torch.autograd.grad(penalty, [x, *params]))
    for g, w in zip(*results):
        torch.testing.assert_close(g, w)


def test_zero_input_without_bias_keeps_gradients_finite() -> None:
    x = torch.zeros(3, IN)
    x[0] = 1.0
    params = [p.float().detach().requires_grad_() for p in parameters(False)[:2]]
    out = fused(x, *params, None, None, torch.randn(3, OUT))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in params)


def test_layer_uses_it_and_samples_the_right_distribution(always_fused) -> None:
    # Pre-activations of a Normal layer: mean x mu + b, variance x^2 sigma^2 + s_b^2.
    torch.manual_seed(4)
    layer = vi.VILinear(IN, OUT, estimator="local_reparameterization")
    x = torch.randn(2, IN)
    samples = 4000
    out = layer(x, samples=samples)
    assert type(out.grad_fn.next_functions[0][0]).__name__ == "LocalLinearBackward"
    out = out.as_plain().detach()
    with torch.no_grad():
        mean = x @ layer._weight_mean.T + layer._bias_mean
        var = x.square() @ torch.exp(2 * layer._weight_log_std).T + torch.exp(
            2 * layer._bias_log_std
        )
    # Sample mean: standard error sqrt(var / n); sample variance: about
    # var * sqrt(2 / n) for a Normal. Five standard errors each.
    torch.testing.assert_close(
        out.mean(0), mean, rtol=0, atol=float(5 * (var / samples).sqrt().max())
    )
    torch.testing.assert_close(out.var(0), var, rtol=5 * (2 / samples) ** 0.5, atol=0.0)


@pytest.mark.parametrize("bias", [True, False])
def test_large_inputs_stay_finite_and_exact(bias):
    # Rows with |x| up to 1e19 (x**2 overflows float32): outputs and gradients are
    # finite and equal the float64 reference.
    torch.manual_seed(0)
    rows = torch.tensor([1e19, 1.0, 1e-3, 300.0, 0.5, 2e19]).unsqueeze(1)
    x = torch.randn(6, 5) * rows
    params = [torch.randn(3, 5), torch.randn(3, 5) * 0.1 - 2]
    params += [torch.randn(3), torch.randn(3) - 2] if bias else [None, None]
    noise = torch.randn(4, 6, 3)

    def run(dtype):
        inputs = [x.detach().to(dtype).requires_grad_()]
        inputs += [
            None if p is None else p.detach().to(dtype).requires_grad_() for p in params
        ]
        out = LocalLinear.apply(*inputs, noise.to(dtype))[0]
        (out * weights.to(dtype)).sum().backward()
        return out, [t.grad for t in inputs if t is not None]

    weights = torch.randn(4, 6, 3)
    out, grads = run(torch.float32)
    want, want_grads = run(torch.float64)
    assert torch.isfinite(out).all()
    # float32 rounding relative to each row's size (its terms cancel in the mean)
    scale = rows.clamp(min=1).double()
    torch.testing.assert_close(out.double() / scale, want / scale, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, want_grads):
        assert torch.isfinite(got).all()
        atol = 1e-5 * expected.abs().max().item()
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=atol)
