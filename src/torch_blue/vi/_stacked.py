"""The stacked path: a ``VISequential`` of dense layers run without ``vmap``.

The sampled forward (:mod:`torch_blue.vi.sampling`) runs any model for S samples by
``torch.vmap``, each layer written for one sample. That generality costs a fixed
amount per operation and per call, which decides the speed of small networks (a
UCI-sized MLP does little work per step). The stacks people build most, a
:class:`~torch_blue.vi.VISequential` of :class:`~torch_blue.vi.VILinear` layers,
convolutions and simple modules, are run here instead with batched operations on
tensors whose dimension 0 is the sample: weights drawn as ``(S, out, in)`` and one
batched product per layer, activations applied once to all samples, pooling on the
samples merged with the batch.

It is taken only where it gives what the lanes give: the same values,
log-probabilities and gradients, drawn from the random number generator in the same
order (``vmap(randomness="different")`` draws the S lanes of one call as one
``(S, ...)`` draw; the stacked path asks for exactly those). Everything else takes the
general path, which raises the errors for bad input too:

* the model is exactly a ``VISequential`` (not a subclass with its own ``forward``)
  called with one tensor, without ``chunk_size``;
* every child is a layer of a class in :data:`STACKED_LAYERS` (exactly:
  :class:`~torch_blue.vi.VILinear`, the convolutions with weight sampling, and the
  low-rank adapters of :mod:`torch_blue.vi.adapters`), not reusing draws, or a plain
  module of a class listed in :data:`PLAIN_STEPS` (activations, ``nn.Linear``,
  convolutions, pooling, ...), with no ``forward`` set on the instance: a partly
  Bayesian stack runs here too;
* no hooks (module or global), no mean-weight mode, no autocast, no ``torch.func``
  transform around the call, a float32 or float64 input.
"""

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .._compat import function_transforms_active, global_call_hooks, has_call_hooks
from .sampling import (
    SamplingState,
    Stacked,
    check_devices,
    check_samples,
    mean_weights_enabled,
    module_log_prob_dtype,
    resolve_samples,
    running,
)
from .utils.vi_return import VIReturn

__all__ = [
    "ENABLED",
    "PLAIN_STEPS",
    "STACKED_LAYERS",
    "register_stacked_layer",
    "stacked_call",
    "stacked_steps",
]

#: Switch for the stacked path (``False``: every call takes the general path). The
#: tests compare both paths with it.
ENABLED = True

#: One step of the stacked path: ``step(module, h, stacked) -> (h, stacked)``.
Step = Callable[[nn.Module, Tensor, Stacked], tuple[Tensor, Stacked]]


def _trailing(module: nn.Module, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    """A module acting on the last dimensions, any leading ones batch: call it."""
    return module(h), stacked


def _dim(module: nn.Module, dim: int, h: Tensor, stacked: Stacked) -> int:
    """``dim`` of one sample as a dimension of ``h``, which may lead with the samples.

    Raises the ``IndexError`` one sample would raise for a dimension out of its range
    (the sample dimension must not make it valid).
    """
    ndim = h.dim() - stacked.input_stacked
    if not -ndim <= dim < max(ndim, 1):
        raise IndexError(
            f"{type(module).__name__}: dimension {dim} is out of range for one sample "
            f"of shape {tuple(stacked.per_sample(h.shape))}"
        )
    return dim + 1 if dim >= 0 and stacked.input_stacked else dim


def _flatten(module: nn.Flatten, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    start = _dim(module, module.start_dim, h, stacked)
    end = _dim(module, module.end_dim, h, stacked)
    return h.flatten(start, end), stacked


def _unflatten(module: nn.Unflatten, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    dim = _dim(module, module.dim, h, stacked)
    return h.unflatten(dim, module.unflattened_size), stacked


def _softmax(function: Callable[..., Tensor]) -> Step:
    def step(module: nn.Module, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
        return function(h, _dim(module, module.dim, h, stacked)), stacked

    return step


def _per_example(module: nn.Module, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    """A module treating dimension 0 as independent rows (pooling): merge S into it."""
    if not stacked.input_stacked:
        return module(h), stacked
    return module(h.flatten(0, 1)).unflatten(0, h.shape[:2]), stacked


def _convolution(module: nn.Module, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    """A plain convolution: batched samples ``(S, N, C, ...)`` join the batch."""
    if stacked.input_stacked:
        if h.dim() == module.weight.dim() + 1:
            return module(h.flatten(0, 1)).unflatten(0, h.shape[:2]), stacked
        if h.dim() != module.weight.dim():
            module(h[0])  # one sample of a shape the convolution refuses: its error
    return module(h), stacked  # (a shared input, or unbatched samples (S, C, ...))


def _dropout(module: nn.Dropout, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    """Dropout draws its mask per sample: a shared input gains the sample dimension."""
    if module.training and module.p > 0:
        if not stacked.input_stacked:
            h = h.expand(stacked.samples, *h.shape)
            stacked = Stacked(stacked.samples, True)
        h = h.contiguous()  # (the mask is drawn in memory order, as in the lanes)
    return module(h), stacked


_TRAILING = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanhshrink,
    nn.Linear,  # (deterministic weights on the last dimension)
    nn.LayerNorm,  # (normalises the last dimensions)
)

#: The plain modules the stacked path runs, by exact type, and how.
PLAIN_STEPS: dict[type[nn.Module], Step] = {
    **dict.fromkeys(_TRAILING, _trailing),
    nn.Flatten: _flatten,
    nn.Unflatten: _unflatten,
    nn.Softmax: _softmax(F.softmax),
    nn.LogSoftmax: _softmax(F.log_softmax),
    nn.Softmin: _softmax(F.softmin),
    nn.Dropout: _dropout,
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _convolution),
    **dict.fromkeys(
        (
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        ),
        _per_example,
    ),
}


#: The layer classes with a stacked forward (``_stacked_forward(input, stacked)``),
#: registered by their modules. Exact types: a subclass may change how the layer
#: draws or computes, so it takes the lanes.
STACKED_LAYERS: set[type[nn.Module]] = set()


def register_stacked_layer(cls: type[nn.Module]) -> type[nn.Module]:
    """Let the stacked path run layers of exactly ``cls`` by ``cls._stacked_forward``.

    Its ``_stacked_forward`` must give what S calls of ``forward`` in the lanes give,
    drawing the same numbers in the same order. An optional ``_stacked_ready()`` says
    per call whether it can (e.g. only for some estimators).
    """
    STACKED_LAYERS.add(cls)
    return cls


def _vi_step(module: nn.Module, h: Tensor, stacked: Stacked) -> tuple[Tensor, Stacked]:
    return module._stacked_forward(h, stacked), Stacked(stacked.samples, True)


def _step_of(module: nn.Module) -> Optional[Step]:
    """How the stacked path runs ``module``, or ``None`` if it cannot."""
    if module is None or has_call_hooks(module) or "forward" in module.__dict__:
        return None  # (None raises in the lanes; an instance's own forward counts)
    if type(module) in STACKED_LAYERS:
        if module._reuse_draws:
            return None
        # (looked up on the class: a failed lookup on a module raises inside torch)
        ready = getattr(type(module), "_stacked_ready", None)
        return _vi_step if ready is None or ready(module) else None
    step = PLAIN_STEPS.get(type(module))
    attributes = module.__dict__  # (plain attributes set by the constructors)
    if (
        step is None
        or attributes.get("dim", 0) is None  # (softmax's implicit dim)
        or attributes.get("return_indices", False)  # (pooling's tuple output)
    ):
        return None
    return step


def stacked_steps(model: nn.Module) -> Optional[list[tuple[nn.Module, Step]]]:
    """The children of ``model`` with their steps, or ``None`` if one has none.

    Every entry in order, as ``VISequential.forward`` calls them: a module used twice
    runs twice.
    """
    if has_call_hooks(model) or "forward" in model.__dict__:
        return None
    steps = []
    for module in model._modules.values():
        step = _step_of(module)
        if step is None:
            return None
        steps.append((module, step))
    return steps


def _plain_input(args: tuple, kwargs: dict, chunk_size: Optional[int]) -> Optional[Tensor]:
    """The one input tensor of a call the stacked path can take, else ``None``."""
    if not ENABLED or kwargs or chunk_size is not None or len(args) != 1:
        return None
    (x,) = args
    if (
        not isinstance(x, Tensor)
        or x.dtype not in (torch.float32, torch.float64)
        or x.device.type == "meta"
        or torch.is_autocast_enabled(x.device.type)
        or mean_weights_enabled()
        or function_transforms_active()
        or global_call_hooks()
    ):
        return None
    return x


@torch.compiler.disable
def stacked_call(
    model: nn.Module,
    args: tuple,
    kwargs: dict,
    samples: Optional[int],
    sampled_input: bool,
    chunk_size: Optional[int] = None,
) -> Any:
    """Run ``model`` for S samples on the stacked path, or return ``NotImplemented``.

    The arguments are those of :func:`~torch_blue.vi.sampling.sampled_call`;
    ``NotImplemented`` means "take the general path" (see the module docstring).
    """
    x = _plain_input(args, kwargs, chunk_size)
    if x is None:
        return NotImplemented
    steps = stacked_steps(model)
    if not steps:
        return NotImplemented
    incoming = None
    input_stacked = sampled_input or isinstance(x, VIReturn)
    if input_stacked and x.dim() == 0:
        return NotImplemented  # (the general path names the error)
    if isinstance(x, VIReturn):
        incoming, x = x.log_probs, x.as_plain()
    owner = type(model).__name__
    check_devices(model, owner, iter((x,)))
    if samples is not None:
        samples = check_samples(owner, samples)
    samples = resolve_samples(owner, samples, {x.shape[0]} if input_stacked else set())
    record = model._return_log_probs
    stacked = Stacked(samples, input_stacked)
    with running(SamplingState(record, samples)) as state:
        for module, step in steps:
            x, stacked = step(module, x, stacked)
    if not stacked.input_stacked:  # (no layer drew anything: the lanes expand)
        x = x.expand(samples, *x.shape)
    elif not x.is_contiguous():  # (the lanes' outputs are)
        x = x.contiguous()
    log_probs = None
    if record:
        log_probs = state.total()
        if log_probs is None:
            log_probs = x.new_zeros(samples, 2, dtype=module_log_prob_dtype(model))
        elif log_probs.dim() == 1:  # (closed-form KL terms only: the same per sample)
            log_probs = log_probs.expand(samples, 2)
        if incoming is not None:
            log_probs = log_probs + incoming.to(log_probs)
    return VIReturn(x, log_probs)
