r"""Fused local reparameterisation of a dense layer.

A dense layer with mean-field Normal weights samples its pre-activations as

.. math::

    y = \underbrace{x\mu_W^\top + \mu_b}_{m}
      + \sqrt{\underbrace{x^2 (\sigma_W^2)^\top + \sigma_b^2}_{v}} \odot \epsilon .

With plain autograd these few lines walk over the ``(S, B, out)`` pre-activations
about fourteen times (the square and its backward, a separate bias addition per
product under ``vmap``, the square root and its backward, the accumulation of the two
input gradients). :class:`LocalLinear` does it in six, with the two products done as
``addmm`` on the flattened batch:

* forward: :math:`x^2`, :math:`\sqrt v` in place, :math:`m + \sqrt v\,\epsilon` in
  place (plus the two products);
* backward, for the output gradient :math:`g`: :math:`h = g\epsilon/\sqrt v` (two
  passes), then :math:`\nabla_x = g\mu_W + x \odot (h\sigma_W^2)` in one, and

.. math::

    \nabla_{\mu_W} = g^\top x,\quad
    \nabla_{\log\sigma_W} = \sigma_W^2 \odot (h^\top x^2),\quad
    \nabla_{\mu_b} = \textstyle\sum g,\quad
    \nabla_{\log\sigma_b} = \sigma_b^2 \odot \textstyle\sum h

(the factor :math:`\tfrac12` of the square root's derivative cancels the 2 of
:math:`\partial\sigma^2/\partial\log\sigma`).

Under :func:`torch.vmap` (the sampled forward) the noise arrives batched and the
input batched or shared; the ``vmap`` rule hands the stacked tensors to the same
function, so an input shared by all samples (a first layer) enters its products
once. Other cases (parameters batched by an outer ``vmap``) fall back to the plain
formulas, which ``vmap`` batches itself.
"""

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

from .utils.precision import computes_in_float16

__all__ = ["LocalLinear", "input_scale", "local_linear_reference", "preactivation_std"]

#: Added to the variance so the square root stays differentiable where an input
#: is zero everywhere and the layer has no bias.
VARIANCE_FLOOR = 1e-16


def variance_floor(dtype: torch.dtype) -> float:
    """:data:`VARIANCE_FLOOR`, or the dtype's smallest normal number if larger.

    In float16 ``1e-16`` is 0, and the square root's derivative at 0 is infinite; its
    smallest normal (6.1e-5) keeps that derivative at 64.
    """
    return max(VARIANCE_FLOOR, torch.finfo(dtype).tiny)


class LocalLinear(torch.autograd.Function):
    """Locally reparameterised ``F.linear``; see the module docstring.

    ``apply(x, weight_mean, weight_log_std, bias_mean, bias_log_std, noise)`` with
    ``x`` of shape ``(*batch, in)`` and ``noise`` standard normal of shape
    ``(*lanes, *batch, out)``: extra leading dimensions of the noise are samples
    that share the input. The bias parameters may be ``None``.
    """

    @staticmethod
    def forward(
        x: Tensor,
        weight_mean: Tensor,
        weight_log_std: Tensor,
        bias_mean: Optional[Tensor],
        bias_log_std: Optional[Tensor],
        noise: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        scale = input_scale(flat, (1,))
        scaled = flat / scale
        squared = scaled * scaled
        weight_var = torch.exp(2 * weight_log_std)
        if bias_mean is None:
            mean = flat @ weight_mean.t()
            floor = noise.new_tensor(variance_floor(noise.dtype))
            std = torch.addmm(floor, squared, weight_var.t())
        else:
            mean = torch.addmm(bias_mean, flat, weight_mean.t())
            std = squared @ weight_var.t()
            # (sigma_b / c)^2 per row (1/c^2 is exact, c a power of two), the floor
            std.addcmul_(scale.pow(-2), torch.exp(2 * bias_log_std))
            std.add_(variance_floor(std.dtype))
        std.sqrt_().mul_(scale)
        shape = (*x.shape[:-1], weight_mean.shape[0])
        mean, std = mean.view(shape), std.view(shape)
        if noise.dim() == mean.dim():
            output = mean.addcmul_(std, noise)
        else:
            output = torch.addcmul(mean, std, noise)
        return output, squared.view(x.shape), std, scale.view(*x.shape[:-1], 1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight_mean, weight_log_std, bias_mean, bias_log_std, noise = inputs
        _, squared, std, scale = output
        ctx.mark_non_differentiable(squared, std, scale)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(
            x,
            squared,
            std,
            scale,
            noise,
            weight_mean,
            weight_log_std,
            bias_mean,
            bias_log_std,
        )

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor, *_internal: Optional[Tensor]
    ) -> tuple[Optional[Tensor], ...]:
        x, squared, std, scale, noise, weight_mean, weight_log_std, _, bias_log_std = (
            ctx.saved_tensors
        )
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            return _differentiable_backward(ctx, grad)
        scaled = grad * noise
        if scaled.dim() > std.dim():  # samples sharing the input: sum them first
            grad = grad.sum_to_size(std.shape)
            scaled = scaled.sum_to_size(std.shape)
        scaled.div_(std)
        out_features = std.shape[-1]
        flat_grad = grad.reshape(-1, out_features)
        flat_scaled = scaled.reshape(-1, out_features)
        flat = x.reshape(-1, x.shape[-1])
        weight_var = torch.exp(2 * weight_log_std)
        grads: list[Optional[Tensor]] = [None] * 6
        if needs[0]:
            grads[0] = (
                (flat_grad @ weight_mean)
                .addcmul_(flat, flat_scaled @ weight_var)
                .view(x.shape)
            )
        if needs[1]:
            grads[1] = flat_grad.t() @ flat
        if needs[2]:  # sum over rows of h x^2 = (h c^2) (x / c)^2
            rescaled = flat_scaled * scale.reshape(-1, 1)
            rescaled.mul_(scale.reshape(-1, 1))
            grads[2] = weight_var * (rescaled.t() @ squared.reshape(flat.shape))
        if needs[3]:
            grads[3] = flat_grad.sum(0)
        if needs[4]:
            grads[4] = torch.exp(2 * bias_log_std) * flat_scaled.sum(0)
        return tuple(grads)

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple,
        x: Tensor,
        weight_mean: Tensor,
        weight_log_std: Tensor,
        bias_mean: Optional[Tensor],
        bias_log_std: Optional[Tensor],
        noise: Tensor,
    ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], tuple]:
        x_dim, *parameter_dims, noise_dim = in_dims
        logical_x = x.dim() - (x_dim is not None)
        logical_noise = noise.dim() - (noise_dim is not None)
        if any(d is not None for d in parameter_dims) or (
            x_dim is not None and logical_x != logical_noise
        ):
            outputs = torch.vmap(local_linear_reference, in_dims=in_dims)(
                x, weight_mean, weight_log_std, bias_mean, bias_log_std, noise
            )
            # The two extra outputs are internal (unused by callers): placeholders.
            return (outputs, outputs, outputs, outputs), (0, 0, 0, 0)
        if x_dim is not None:
            x = x.movedim(x_dim, 0)
        if noise_dim is not None:
            noise = noise.movedim(noise_dim, 0)
        output, squared, std, scale = LocalLinear.apply(
            x, weight_mean, weight_log_std, bias_mean, bias_log_std, noise
        )
        stacked = 0 if x_dim is not None else None
        return (output, squared, std, scale), (0, stacked, stacked, stacked)


def _differentiable_backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
    """Backward under ``create_graph``: recompute with plain autograd.

    Higher derivatives need a graph through the backward pass; the fused backward
    treats its saved intermediates as constants, so this path rebuilds the output from
    the saved inputs and the same noise and differentiates it with ``create_graph``.
    """
    x, _, _, _, noise, weight_mean, weight_log_std, bias_mean, bias_log_std = (
        ctx.saved_tensors
    )
    inputs = (x, weight_mean, weight_log_std, bias_mean, bias_log_std)
    wanted = [t for t, need in zip(inputs, ctx.needs_input_grad) if need and t is not None]
    with torch.enable_grad():
        output = local_linear_reference(*inputs, noise)
        found = iter(torch.autograd.grad(output, wanted, grad, create_graph=True))
    return tuple(
        next(found) if need and t is not None else None
        for t, need in zip((*inputs, noise), ctx.needs_input_grad)
    )


def local_linear_reference(
    x: Tensor,
    weight_mean: Tensor,
    weight_log_std: Tensor,
    bias_mean: Optional[Tensor],
    bias_log_std: Optional[Tensor],
    noise: Tensor,
) -> Tensor:
    """:class:`LocalLinear`'s output with plain autograd (fallback and test reference)."""
    bias = None if bias_log_std is None else (bias_mean, bias_log_std)
    mean = torch.nn.functional.linear(x, weight_mean, bias_mean)
    return (
        mean
        + preactivation_std(torch.nn.functional.linear, x, weight_log_std, bias, 0) * noise
    )


def input_scale(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """The scale of an example: a power of two near ``max |x|`` over ``dims`` (kept).

    ``2**floor(log2(max |x|))``, at least 1, detached. Dividing an example's inputs by
    it before squaring keeps ``x**2`` within the dtype's range (``300**2`` overflows
    float16). Being a power of two, it changes no rounding: where the unscaled
    formula does not overflow, the scaled one gives the same bits, and inputs within
    [-1, 1] are not scaled at all.
    """
    # (abs + amax: the same values as the infinity norm, several times faster on a CPU)
    largest = x.detach().abs().amax(dim=dims, keepdim=True)
    return torch.exp2(torch.floor(torch.log2(largest.clamp(min=1))))


def preactivation_std(
    op: Callable[[Tensor, Tensor, Optional[Tensor]], Tensor],
    x: Tensor,
    weight_log_std: Tensor,
    bias: Optional[tuple[Tensor, Tensor]],
    spatial_dims: int,
) -> Tensor:
    r"""Standard deviation of the pre-activations of ``op`` with Normal weights.

    :math:`\sqrt{\mathrm{op}(x^2, \sigma_W^2) + \sigma_b^2}`, computed per example
    as :math:`c\,\sqrt{\mathrm{op}((x/c)^2, \sigma_W^2) + (\sigma_b/c)^2}` with
    :math:`c` from :func:`input_scale`, so that it overflows only where the
    result does. ``op`` is linear per example (a dense map or a convolution over
    ``spatial_dims`` dimensions) and ``bias`` is ``(mean, log_std)`` or ``None``.

    Where the computation would run in float16 (float16 inputs, or float16
    autocast) it runs in float32 instead and the result is cast back: the square
    root's derivative, :math:`c/(2\sqrt{\cdot})`, exceeds float16's range where an
    input is large and its neighbours are zero.
    """
    if computes_in_float16(x):
        with torch.autocast(x.device.type, enabled=False):
            wide_bias = None if bias is None else (bias[0], bias[1].float())
            std = preactivation_std(
                op, x.float(), weight_log_std.float(), wide_bias, spatial_dims
            )
        return std.half()
    scale = input_scale(x, tuple(range(x.dim() - 1 - spatial_dims, x.dim())))
    variance = op((x / scale).square(), torch.exp(2 * weight_log_std), None)
    if bias is not None:  # + (sigma_b / c)^2; 1/c^2 is exact, c a power of two
        bias_var = torch.exp(2 * bias[1]).view(-1, *(1,) * spatial_dims)
        variance = torch.addcmul(variance, bias_var, scale.pow(-2))
    # The floor keeps sqrt differentiable where an input is exactly zero everywhere.
    return scale * torch.sqrt(variance + variance_floor(variance.dtype))


def local_linear(
    x: Tensor,
    weight: tuple[Tensor, Tensor],
    bias: Optional[tuple[Tensor, Tensor]],
    lanes: Optional[int] = None,
) -> Tensor:
    """Sample the pre-activations of ``F.linear(x, W, b)`` for Normal ``W``, ``b``.

    ``lanes=S`` draws noise for S samples sharing ``x`` (a leading dimension).
    """
    lead = () if lanes is None else (lanes,)
    shape = (*lead, *x.shape[:-1], weight[0].shape[0])
    noise = torch.randn(shape, dtype=x.dtype, device=x.device)
    bias_mean, bias_log_std = bias if bias is not None else (None, None)
    return LocalLinear.apply(x, *weight, bias_mean, bias_log_std, noise)[0]
