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

from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["LocalLinear", "local_linear_reference"]

#: Added to the variance so the square root stays differentiable where an input
#: is zero everywhere and the layer has no bias.
VARIANCE_FLOOR = 1e-16


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
        squared = flat * flat
        weight_var = torch.exp(2 * weight_log_std)
        if bias_mean is None:
            mean = flat @ weight_mean.t()
            std = torch.addmm(noise.new_tensor(VARIANCE_FLOOR), squared, weight_var.t())
        else:
            mean = torch.addmm(bias_mean, flat, weight_mean.t())
            bias_var = torch.exp(2 * bias_log_std) + VARIANCE_FLOOR
            std = torch.addmm(bias_var, squared, weight_var.t())
        std.sqrt_()
        shape = (*x.shape[:-1], weight_mean.shape[0])
        mean, std = mean.view(shape), std.view(shape)
        if noise.dim() == mean.dim():
            output = mean.addcmul_(std, noise)
        else:
            output = torch.addcmul(mean, std, noise)
        return output, squared.view(x.shape), std

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight_mean, weight_log_std, bias_mean, bias_log_std, noise = inputs
        _, squared, std = output
        ctx.mark_non_differentiable(squared, std)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(
            x, squared, std, noise, weight_mean, weight_log_std, bias_mean, bias_log_std
        )

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor, _squared: Optional[Tensor], _std: Optional[Tensor]
    ) -> tuple[Optional[Tensor], ...]:
        x, squared, std, noise, weight_mean, weight_log_std, _, bias_log_std = (
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
        if needs[2]:
            grads[2] = weight_var * (flat_scaled.t() @ squared.reshape(flat.shape))
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
    ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple]:
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
            return (outputs, outputs, outputs), (0, 0, 0)
        if x_dim is not None:
            x = x.movedim(x_dim, 0)
        if noise_dim is not None:
            noise = noise.movedim(noise_dim, 0)
        output, squared, std = LocalLinear.apply(
            x, weight_mean, weight_log_std, bias_mean, bias_log_std, noise
        )
        stacked = 0 if x_dim is not None else None
        return (output, squared, std), (0, stacked, stacked)


def _differentiable_backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
    """Backward under ``create_graph``: recompute with plain autograd.

    Higher derivatives need a graph through the backward pass; the fused backward
    treats its saved intermediates as constants, so this path rebuilds the output from
    the saved inputs and the same noise and differentiates it with ``create_graph``.
    """
    x, _, _, noise, weight_mean, weight_log_std, bias_mean, bias_log_std = ctx.saved_tensors
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
    bias_var = None if bias_log_std is None else torch.exp(2 * bias_log_std)
    mean = torch.nn.functional.linear(x, weight_mean, bias_mean)
    var = torch.nn.functional.linear(x * x, torch.exp(2 * weight_log_std), bias_var)
    return mean + torch.sqrt(var + VARIANCE_FLOOR) * noise


def local_linear(
    x: Tensor,
    weight: tuple[Tensor, Tensor],
    bias: Optional[tuple[Tensor, Tensor]],
) -> Tensor:
    """Sample the pre-activations of ``F.linear(x, W, b)`` for Normal ``W``, ``b``."""
    noise = torch.randn((*x.shape[:-1], weight[0].shape[0]), dtype=x.dtype, device=x.device)
    bias_mean, bias_log_std = bias if bias is not None else (None, None)
    return LocalLinear.apply(x, *weight, bias_mean, bias_log_std, noise)[0]
