"""Convolutions whose input and weights both differ between the sample lanes.

Under ``torch.vmap`` a convolution with a batched input *and* batched weights (every
layer after the first with weights drawn per sample, and Flipout's perturbations)
becomes one grouped convolution over ``S`` groups. On a CPU, oneDNN's grouped
convolutions, and above all their backward pass, are slower than ``S`` ordinary
convolutions of the same total size (see the benchmarks page). :class:`LaneConvolution`
gives such calls a ``vmap`` rule that loops over the lanes on a CPU. A first layer
(a shared input, weights per lane) runs as one convolution with the lanes' weights
and biases stacked as output channels; other cases (shared weights, grouped first
layers, other devices) keep ``vmap``'s own rule.
"""

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["LaneConvolution", "lane_convolution", "stacked_convolution"]


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
        if input_dim is None and weight_dim is not None:
            shared = _shared_input_convolution(input_, weight, weight_dim, bias, bias_dim,
                                               op, args)  # fmt: skip
            if shared is not None:
                return shared, 1
        if input_dim is None or weight_dim is None or input_.device.type != "cpu":
            call = torch.vmap(lambda x, w, b: op(x, w, b, *args), in_dims=in_dims[:3])
            return call(input_, weight, bias), 0
        inputs = input_.movedim(input_dim, 0).unbind(0)
        weights = weight.movedim(weight_dim, 0).unbind(0)
        if bias_dim is not None:
            biases = bias.movedim(bias_dim, 0).unbind(0)
        else:
            biases = (bias,) * info.batch_size
        return _loop(op, inputs, weights, biases, args), 0


def _loop(
    op: Callable[..., Tensor],
    inputs: Any,
    weights: Any,
    biases: Any,
    args: tuple = (),
) -> Tensor:
    """``op`` once per sample, stacked: ``(S, *output)``."""
    return torch.stack([op(x, w, b, *args) for x, w, b in zip(inputs, weights, biases)])


def _shared_input_convolution(
    input_: Tensor,
    weight: Tensor,
    weight_dim: int,
    bias: Optional[Tensor],
    bias_dim: Optional[int],
    op: Callable[..., Tensor],
    args: tuple,
) -> Optional[Tensor]:
    """All lanes' convolutions of one shared batch as one convolution, or ``None``.

    The lanes' weights are stacked as output channels, and their biases with them, so
    the bias is added inside the convolution (``vmap``'s own rule adds it in a separate
    pass and sums its gradient in another). Returns ``(batch, lanes, out, *spatial)``;
    ``None`` where stacking does not apply: grouped convolutions (stacking would mix
    the groups) and unbatched inputs.
    """
    weights = weight.movedim(weight_dim, 0)
    lanes, out_channels = weights.shape[:2]
    if input_.dim() != weights.dim() - 1 or input_.shape[1] != weights.shape[2]:
        return None
    if bias is not None:
        if bias_dim is None:
            bias = bias.expand(lanes, out_channels)
        else:
            bias = bias.movedim(bias_dim, 0)
        bias = bias.reshape(lanes * out_channels)
    output = op(input_, weights.flatten(0, 1), bias, *args)
    return output.unflatten(1, (lanes, out_channels))


def lane_convolution(
    op: Callable[..., Tensor],
    input_: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    *args: Any,
) -> Tensor:
    """``op(input_, weight, bias, *args)``, looping over sample lanes where faster."""
    return LaneConvolution.apply(input_, weight, bias, op, args)


def stacked_convolution(
    op: Callable[..., Tensor],
    input_: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    input_stacked: bool,
    loop: bool,
) -> Tensor:
    """``op`` with one weight set per sample, on the stacked path.

    ``weight`` is ``(S, out, ...)`` and ``bias`` ``(S, out)`` or ``None``; the input
    carries the samples as its dimension 0 if ``input_stacked``, else all share it.
    The computations of the lanes: a shared batch meets all weight sets in one
    convolution; per-sample inputs take a loop over the samples where ``loop`` (large
    convolutions on a CPU, as :class:`LaneConvolution`), else ``vmap``'s grouped
    convolution. Returns ``(S, *output)``.
    """
    samples = weight.shape[0]
    biases = (None,) * samples if bias is None else bias.unbind(0)
    if not input_stacked:
        shared = _shared_input_convolution(input_, weight, 0, bias, 0, op, ())
        if shared is not None:
            return shared.movedim(1, 0)
        return _loop(op, (input_,) * samples, weight.unbind(0), biases)
    if loop and input_.device.type == "cpu":
        return _loop(op, input_.unbind(0), weight.unbind(0), biases)
    in_dims = (0, 0, None if bias is None else 0)
    return torch.vmap(op, in_dims=in_dims)(input_, weight, bias)
