r"""Fused draw of a mean-field Normal weight with its log-densities.

The default estimator draws :math:`W_s = \mu + \sigma \odot \epsilon_s` for every
sample ``s`` and scores it under the variational distribution and a Normal prior.
Written with plain autograd, the backward pass of those few lines walks over the
``(S, *shape)`` draws about nine times (sum over the samples for the mean, product
with the noise and a second sum for the scale, the vector-norm backward of the prior,
the accumulation of its gradient); on a CPU these memory-bound passes cost more than
the matrix products they feed. :class:`NormalDraw` computes the same values and the
same gradients in four passes, because it knows the structure. With prior mean
:math:`m` and variance :math:`v` (scalars) and :math:`P` elements,

.. math::

    \log q(W_s) = -\tfrac12 \lVert\epsilon_s\rVert^2 - \textstyle\sum \log\sigma,
    \qquad
    \log p(W_s) = -\tfrac12 \lVert W_s - m\rVert^2 / v - \tfrac{P}{2}\log v

(each minus :math:`\tfrac{P}{2}\log 2\pi` with normalisation constants). For the
upstream gradients :math:`G_s` of the draws and :math:`g^p_s, g^q_s` of the
log-densities,

.. math::

    T_s = G_s - g^p_s (W_s - m) / v,\quad
    \nabla_\mu = \textstyle\sum_s T_s,\quad
    \nabla_{\log\sigma} = \sigma \odot \textstyle\sum_s T_s \odot \epsilon_s
    - \textstyle\sum_s g^q_s.

:math:`\log q` is the log-density at the draw as a function of the variational
parameters with the noise held fixed (the reparameterised total derivative), as in
:meth:`MeanFieldNormal.sample_and_log_prob`.

Under :func:`torch.vmap` (the sampled forward), the noise drawn by ``randn_like``
arrives batched while the parameters are shared, and the ``vmap`` rule runs the fused
forward and backward once on the stacked ``(S, *shape)`` tensors.
"""

import math
from functools import partial
from typing import Any, Optional

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI

__all__ = ["NormalDraw", "ScaledNoise", "SharedNoise", "normal_draw"]


def normal_draw(
    mean: Tensor,
    log_std: Tensor,
    noise: Tensor,
    stacked: bool,
    prior_mean: float,
    prior_variance: float,
    constants: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(W, log p, log q)`` of a Normal draw: :class:`NormalDraw`'s forward.

    Called directly it is differentiated by plain autograd, which costs fewer Python
    calls than the fused backward where the draws are small.
    """
    sample = torch.addcmul(mean, torch.exp(log_std), noise)
    dims = tuple(range(1, noise.dim())) if stacked else None
    count = math.prod(noise.shape[1:]) if stacked else noise.numel()
    constant = 0.5 * LOG_2PI * count if constants else 0.0
    centred = sample if prior_mean == 0.0 else sample - prior_mean
    # (the terms without the parameters first: the noise needs no gradient)
    log_q = torch.linalg.vector_norm(noise, dim=dims).square_().mul_(-0.5).sub_(constant)
    if stacked and log_std.dim() == noise.dim():
        log_q = log_q - log_std.flatten(1).sum(1)
    else:
        log_q = log_q - log_std.sum()
    if torch.is_grad_enabled() and (mean.requires_grad or log_std.requires_grad):
        # (plain autograd: the square's backward takes fewer operations than the norm's)
        squares = centred.square().sum(dims) if stacked else centred.square().sum()
    else:
        squares = torch.linalg.vector_norm(centred, dim=dims).square()
    log_p = squares.mul(-0.5 / prior_variance)
    log_p = log_p.sub(0.5 * count * math.log(prior_variance) + constant)
    return sample, log_p, log_q


class NormalDraw(torch.autograd.Function):
    """``(W, log p, log q)`` of a Normal draw; see the module docstring.

    ``apply(mean, log_std, noise, stacked, prior_mean, prior_variance, constants)``:
    ``noise`` is standard normal; with ``stacked`` its leading dimension indexes
    draws (``mean`` and ``log_std`` broadcast against it) and ``log p``, ``log q``
    have one entry per draw. ``prior_mean`` and ``prior_variance`` are floats
    (the variance includes the prior's ``eps``); ``constants`` adds the normalisation
    constants.
    """

    forward = staticmethod(normal_draw)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        mean, log_std, noise, stacked, prior_mean, prior_variance, _ = inputs
        ctx.stacked = stacked
        ctx.prior_mean = prior_mean
        ctx.prior_variance = prior_variance
        ctx.mean_shape = mean.shape
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(log_std, noise, output[0])

    @staticmethod
    def backward(
        ctx: Any,
        grad_sample: Optional[Tensor],
        grad_log_p: Optional[Tensor],
        grad_log_q: Optional[Tensor],
    ) -> tuple[Optional[Tensor], ...]:
        log_std, noise, sample = ctx.saved_tensors
        total = grad_sample
        if grad_log_p is not None:
            scale = grad_log_p / -ctx.prior_variance
            if ctx.stacked:
                scale = scale.reshape(-1, *(1,) * (noise.dim() - 1))
            centred = sample if ctx.prior_mean == 0.0 else sample - ctx.prior_mean
            if total is None:
                total = scale * centred
            else:
                total = torch.addcmul(total, scale, centred)
        grad_mean = grad_log_std = None
        if total is not None:
            grad_mean = _sum_to_size(total, ctx.mean_shape)
            if (
                total is grad_sample  # never overwrite autograd's buffer
                or total.shape == ctx.mean_shape  # grad_mean may be total itself
                or torch.is_grad_enabled()  # a double backward needs total
            ):
                product = total * noise
            else:
                product = total.mul_(noise)  # total is ours and no longer needed
            grad_log_std = torch.exp(log_std) * _sum_to_size(product, log_std.shape)
        if grad_log_q is not None:
            if ctx.stacked and log_std.dim() == noise.dim():
                drop = grad_log_q.reshape(-1, *(1,) * (noise.dim() - 1))
            else:
                drop = grad_log_q.sum()
            grad_log_std = -drop if grad_log_std is None else grad_log_std - drop
            grad_log_std = grad_log_std.expand(log_std.shape)
        return grad_mean, grad_log_std, None, None, None, None, None

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple,
        mean: Tensor,
        log_std: Tensor,
        noise: Tensor,
        stacked: bool,
        prior_mean: float,
        prior_variance: float,
        constants: bool,
    ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[int, int, int]]:
        settings = (prior_mean, prior_variance, constants)
        if stacked or in_dims[0] is not None or in_dims[1] is not None:
            # Not the sampled forward's case (nested vmaps, batched parameters): the
            # plain formulas, which vmap knows how to batch.
            reference = partial(normal_draw_reference, stacked=stacked, settings=settings)
            outputs = torch.vmap(reference, in_dims=in_dims[:3])(mean, log_std, noise)
            return outputs, (0, 0, 0)
        noise = noise.movedim(in_dims[2], 0)
        return NormalDraw.apply(mean, log_std, noise, True, *settings), (0, 0, 0)


class ScaledNoise(torch.autograd.Function):
    r"""``exp(log_std) * noise``: a zero-mean Normal draw (Flipout's perturbation).

    Its gradient with respect to ``log_std`` sums over the draws; the ``vmap`` rule
    hands the stacked noise to one call, whose backward sums the (often transposed)
    gradient through :func:`_sum_to_size` instead of autograd's slow reduction.
    """

    @staticmethod
    def forward(log_std: Tensor, noise: Tensor) -> Tensor:
        return torch.exp(log_std) * noise

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], None]:
        log_std, noise = ctx.saved_tensors
        return torch.exp(log_std) * _sum_to_size(grad * noise, log_std.shape), None

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple, log_std: Tensor, noise: Tensor
    ) -> tuple[Tensor, int]:
        if in_dims[0] is not None or in_dims[1] is None:
            output = torch.vmap(lambda s, n: torch.exp(s) * n, in_dims=in_dims)(
                log_std, noise
            )
            return output, 0
        return ScaledNoise.apply(log_std, noise.movedim(in_dims[1], 0)), 0


class SharedNoise(torch.autograd.Function):
    """Standard normal noise of ``like``'s shape, drawn once for all ``vmap`` lanes.

    ``apply(like)`` with ``like`` detached. Inside the sampled forward ``like`` (a
    parameter) is not batched, and :func:`torch.vmap` runs a custom function whose
    inputs are all unbatched below its own level, so the noise comes out unbatched:
    one draw shared by every lane, although the lanes draw with
    ``randomness="different"``. If ``like`` is batched (parameters that differ per
    lane), each lane draws its own.
    """

    @staticmethod
    def forward(like: Tensor) -> Tensor:
        return torch.randn(like.shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> None:  # pragma: no cover (no inputs' grad)
        return None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, like: Tensor) -> tuple[Tensor, Optional[int]]:
        if info.randomness == "error":
            raise RuntimeError(
                "SharedNoise: drawing random noise under vmap needs "
                "randomness='different' or 'same', got randomness='error'"
            )
        if info.randomness == "same":
            shape = like.movedim(in_dims[0], 0).shape[1:]
            return torch.randn(shape, dtype=like.dtype, device=like.device), None
        return SharedNoise.apply(like), in_dims[0]


def _sum_to_size(tensor: Tensor, shape: torch.Size) -> Tensor:
    """``tensor.sum_to_size(shape)``, fast for the layouts gradients arrive in.

    The gradient of a weight used as ``x @ W.T`` arrives transposed, and PyTorch's
    CPU reduction over the leading dimension of such a tensor is much slower than over
    a contiguous one (the benchmarks page has the measurement). Summing a permuted
    view whose dimensions follow the memory order, and permuting back, avoids it.
    """
    if (
        tensor.dim() == len(shape) + 1
        and tensor.dim() > 2
        and not torch.compiler.is_compiling()  # the compiler picks its own layouts
    ):
        order = sorted(range(1, tensor.dim()), key=lambda d: -tensor.stride(d))
        if order != list(range(1, tensor.dim())):
            summed = tensor.permute(0, *order).sum(0)
            inverse = sorted(range(len(order)), key=lambda i: order[i])
            return summed.permute(*inverse).sum_to_size(shape)
    return tensor.sum_to_size(shape)


def normal_draw_reference(
    mean: Tensor,
    log_std: Tensor,
    noise: Tensor,
    stacked: bool,
    settings: tuple[float, float, bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`NormalDraw` with plain autograd (its fallback and test reference)."""
    prior_mean, prior_variance, constants = settings
    sample = mean + torch.exp(log_std) * noise
    dims = tuple(range(1, noise.dim())) if stacked else tuple(range(noise.dim()))
    count = math.prod(noise.shape[1:]) if stacked else noise.numel()
    if stacked and log_std.dim() == noise.dim():
        log_std_sum = log_std.sum(dims)
    else:
        log_std_sum = log_std.sum()
    log_q = -0.5 * noise.square().sum(dims) - log_std_sum
    log_p = -0.5 * (
        (sample - prior_mean).square().sum(dims) / prior_variance
        + count * math.log(prior_variance)
    )
    if constants:
        log_q = log_q - 0.5 * LOG_2PI * count
        log_p = log_p - 0.5 * LOG_2PI * count
    return sample, log_p, log_q
