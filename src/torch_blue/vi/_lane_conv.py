"""Convolutions whose input and weights both differ between the sample lanes.

Under ``torch.vmap`` a convolution with a batched input *and* batched weights (every
layer after the first, with weights drawn per sample) becomes one grouped convolution
over ``S`` groups. On a CPU, oneDNN's grouped convolutions, and above all their
backward pass, are much slower than ``S`` ordinary convolutions of the same total
size (LeNet-5's second layer, ``S = 10``, batch 64: 60 ms for forward and backward
grouped, 40 ms as a loop). :class:`LaneConvolution` gives such calls a ``vmap`` rule
that loops over the lanes on a CPU; every other case (a shared input, shared weights,
other devices) keeps ``vmap``'s own rule.
"""

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["LaneConvolution", "lane_convolution"]


class LaneConvolution(torch.autograd.Function):
    """``op(input, weight, bias, *args)`` with a lane-looping ``vmap`` rule.

    Outside ``vmap`` it is just ``op`` (its backward recomputes ``op`` with autograd,
    a path the sampled forward does not take).
    """

    @staticmethod
    def forward(
        input_: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        op: Callable[..., Tensor],
        args: tuple,
    ) -> Tensor:
        return op(input_, weight, bias, *args)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input_, weight, bias, op, args = inputs
        ctx.op, ctx.args = op, args
        ctx.save_for_backward(input_, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        needs = ctx.needs_input_grad[:3]
        create_graph = torch.is_grad_enabled()  # a double backward
        with torch.enable_grad():
            inputs = list(ctx.saved_tensors)
            if not create_graph:
                inputs = [
                    None if t is None else t.detach().requires_grad_(need)
                    for t, need in zip(inputs, needs)
                ]
            output = ctx.op(*inputs, *ctx.args)
            wanted = [t for t, need in zip(inputs, needs) if need and t is not None]
            found = iter(
                torch.autograd.grad(output, wanted, grad, create_graph=create_graph)
            )
        grads = [
            next(found) if need and t is not None else None
            for t, need in zip(inputs, needs)
        ]
        return (*grads, None, None)

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple,
        input_: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        op: Callable[..., Tensor],
        args: tuple,
    ) -> tuple[Tensor, int]:
        input_dim, weight_dim, bias_dim = in_dims[:3]
        if input_dim is None or weight_dim is None or input_.device.type != "cpu":
            call = torch.vmap(lambda x, w, b: op(x, w, b, *args), in_dims=in_dims[:3])
            return call(input_, weight, bias), 0
        inputs = input_.movedim(input_dim, 0).unbind(0)
        weights = weight.movedim(weight_dim, 0).unbind(0)
        if bias_dim is not None:
            biases = bias.movedim(bias_dim, 0).unbind(0)
        else:
            biases = (bias,) * info.batch_size
        outputs = [op(x, w, b, *args) for x, w, b in zip(inputs, weights, biases)]
        return torch.stack(outputs), 0


def lane_convolution(
    op: Callable[..., Tensor],
    input_: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    *args: Any,
) -> Tensor:
    """``op(input_, weight, bias, *args)``, looping over sample lanes where faster."""
    return LaneConvolution.apply(input_, weight, bias, op, args)
