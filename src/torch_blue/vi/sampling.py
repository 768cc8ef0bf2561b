"""Autosampling: run a forward for S weight draws at once, decided at call time.

The first :class:`~torch_blue.vi.VIModule` called while no sampled forward is running
becomes the *outermost* module of that call. It opens a :class:`SamplingState`, runs
its forward under ``torch.vmap(randomness="different")`` over S lanes, and returns a
:class:`~torch_blue.vi.VIReturn`. Every VI module called inside sees the open state and
runs its forward plainly, for one sample; every random-variable access inside draws a
fresh weight per lane and adds its log-probabilities to the state.

Inputs that do not depend on the sample enter the lanes unbatched, so computations on
them alone (e.g. ``x @ mean.T`` of a first layer) run once, not S times. A
``VIReturn`` input already carries its sample dimension: it is mapped over instead of
being sampled again, and its log-probabilities are added to the output's, so chains of
independent top-level calls (VI layers inside a plain ``nn.Sequential``) work.
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import MethodType
from typing import Any, Optional

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812
from torch.nn.modules.batchnorm import _BatchNorm

from .._compat import tree_flatten, tree_unflatten
from ._lane_attention import lane_attention
from .utils.checks import check_int
from .utils.errors import ShapeError
from .utils.precision import log_prob_dtype
from .utils.vi_return import VIReturn

__all__ = [
    "DEFAULT_SAMPLES",
    "SamplingState",
    "batch_norm_in_lanes",
    "current_state",
    "fused_pays_off",
    "mean_weights",
    "mean_weights_enabled",
    "sampled_call",
]

DEFAULT_SAMPLES = 10

_local = threading.local()


class SamplingState:
    """Log-probabilities recorded during one sampled forward.

    Repeated accesses of the same random variable are averaged, different variables
    are summed.
    """

    __slots__ = ("_entries", "deferred", "draws", "lanes", "record")

    def __init__(self, record: bool, lanes: int = 1) -> None:
        self.record = record
        self.lanes = lanes  # samples run together (the vmap batch size)
        self._entries: dict[tuple[int, str], list] = {}
        self.deferred: list[tuple[Callable[[Tensor], None], Tensor]] = []
        # (id(module), variable) -> its draw, for modules with reuse_draws
        self.draws: dict[tuple[int, str], Optional[Tensor]] = {}

    def defer(self, callback: Callable[[Tensor], None], value: Tensor) -> None:
        """Call ``callback`` with ``value`` for all lanes, ``(S, ...)``, after the call.

        Inside the lanes, state cannot be updated in place with per-lane values
        (e.g. the running statistics of a batch norm); a module defers the update
        instead and receives the stacked values once the sampled forward is done.
        """
        self.deferred.append((callback, value))

    def add(self, module: torch.nn.Module, variable: str, log_probs: Tensor) -> None:
        """Record the ``(2,)`` log-probabilities of one access of ``variable``."""
        key = (id(module), variable)
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = [log_probs, 1]
        else:
            entry[0] = entry[0] + log_probs
            entry[1] += 1

    def total(self) -> Optional[Tensor]:
        """Sum over variables of the mean over accesses, or ``None`` if none."""
        result = None
        for value, count in self._entries.values():
            term = value if count == 1 else value / count
            result = term if result is None else result + term
        return result


def current_state() -> Optional[SamplingState]:
    """The state of the sampled forward running now in this thread, if any."""
    return getattr(_local, "state", None)


#: Fewest elements (per call, over all lanes) for which the fused autograd functions
#: of torch_blue (Normal draws, local reparameterisation, lane convolutions) beat the
#: plain formulas. Their ``vmap`` rules run in Python and cost about 0.7 ms a call on a
#: CPU, while they save about 7 ns per element; small layers keep the plain path.
FUSED_MIN_ELEMENTS = 2**17


def fused_pays_off(elements_per_lane: int) -> bool:
    """Whether a fused function over ``elements_per_lane`` per sample is worth its cost.

    Counts the lanes of the sampled forward running now (one outside of it).
    """
    state = current_state()
    lanes = state.lanes if state is not None else 1
    return elements_per_lane * lanes >= FUSED_MIN_ELEMENTS


def mean_weights_enabled() -> bool:
    """Whether mean-weight mode (:func:`~torch_blue.vi.mean_weights`) is on here."""
    return getattr(_local, "mean_weights", False)


class mean_weights:  # noqa: N801 - a context manager named like torch.no_grad
    """Context manager: use the variational means instead of weight draws.

    Inside it every random variable reads as its point estimate (the mean of a
    Normal), layers draw no noise, no log-probabilities are recorded (outputs carry
    ``log_probs=None``) and an outermost call without ``samples=`` runs one sample.
    This is the deterministic network :func:`~torch_blue.vi.to_deterministic`
    exports. The setting is per thread, like ``torch.no_grad``.

    Parameters
    ----------
    mode : bool, default: True
        ``False`` switches mean-weight mode off inside an enclosing one.

    Examples
    --------
    >>> import torch
    >>> from torch_blue import vi
    >>> layer = vi.VILinear(3, 2)
    >>> x = torch.randn(4, 3)
    >>> with vi.mean_weights():
    ...     out = layer(x)
    >>> out.shape, out.log_probs
    (torch.Size([1, 4, 2]), None)
    >>> # (F.linear's fused addmm: equal up to the order of the float summation)
    >>> torch.allclose(out[0], x @ layer._weight_mean.T + layer._bias_mean)
    True
    """

    def __init__(self, mode: bool = True) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"mean_weights: mode must be a bool, got {mode!r}")
        self.mode = mode
        self._previous: list[bool] = []

    def __enter__(self) -> "mean_weights":
        self._previous.append(mean_weights_enabled())
        _local.mean_weights = self.mode
        return self

    def __exit__(self, *exc: object) -> None:
        _local.mean_weights = self._previous.pop()


#: Most samples one call may draw (more overflows tensor sizes).
MAX_SAMPLES = 2**31 - 1


def _check_samples(owner: str, samples: Any) -> int:
    samples = check_int(owner, "samples", samples)
    if samples > MAX_SAMPLES:
        raise ValueError(f"{owner}: samples must be at most {MAX_SAMPLES}, got {samples}")
    return samples


def batch_norm_in_lanes(
    module: torch.nn.Module,
    input_: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
) -> Tensor:
    """Train-mode batch norm that works inside the sample lanes.

    ``F.batch_norm`` updates the running statistics in place, which vmap forbids for
    per-lane inputs. Instead every lane is normalised with its own batch statistics,
    and ``module``'s running statistics (``running_mean``, ``running_var``,
    ``num_batches_tracked``, ``momentum``, ``eps`` as in ``torch.nn``) are updated once
    after the call from the lanes' average (:meth:`SamplingState.defer`), or at once
    outside a sampled forward. Used by plain ``nn.BatchNorm`` layers inside a model
    and by :class:`~torch_blue.vi.VIBatchNorm1d`.
    """
    output = F.batch_norm(input_, None, None, weight, bias, True, 0.0, module.eps)
    if module.track_running_stats:
        dims = [0, *range(2, input_.dim())]
        var, mean = torch.var_mean(input_.detach(), dim=dims, correction=1)
        stats = torch.stack([mean, var])
        state = current_state()
        if state is None:
            _update_running_stats(module, stats.unsqueeze(0))
        else:
            state.defer(partial(_update_running_stats, module), stats)
    return output


def _lane_safe_batch_norm(self: _BatchNorm, input_: Tensor) -> Tensor:
    """Forward given to plain ``nn.BatchNorm`` layers while a model containing them runs.

    Inside a sampled forward of this thread, a training norm tracking running
    statistics normalises lane-safely; everywhere else (other threads, eval mode) the
    class's own forward runs.
    """
    if current_state() is None or not (self.training and self.track_running_stats):
        return type(self).forward(self, input_)
    self._check_input_dim(input_)
    return batch_norm_in_lanes(self, input_, self.weight, self.bias)


def _update_running_stats(module: torch.nn.Module, lane_stats: Tensor) -> None:
    """Momentum update of ``module`` from ``(S, 2, C)`` per-lane (mean, variance)."""
    mean, var = lane_stats.mean(dim=0)
    with torch.no_grad():
        module.num_batches_tracked.add_(1)
        if module.momentum is None:  # cumulative moving average
            factor = 1.0 / float(module.num_batches_tracked)
        else:
            factor = module.momentum
        module.running_mean.mul_(1 - factor).add_(
            mean.to(module.running_mean), alpha=factor
        )
        module.running_var.mul_(1 - factor).add_(var.to(module.running_var), alpha=factor)


# id(norm) -> sampled forwards (of any thread) running with its forward replaced
_patched_norms: dict[int, int] = {}
_patch_lock = threading.Lock()


@contextmanager
def _lane_safe_batch_norms(module: torch.nn.Module) -> Iterator[None]:
    """Give the plain batch norms inside ``module`` a lane-safe forward.

    The replacement is an instance attribute, shared by threads calling the same
    model at once: it is installed by the first call and removed by the last
    (counted under a lock), and decides per call and thread what to run. A forward
    the user set on the instance is left alone.
    """
    norms = []
    with _patch_lock:
        for norm in module.modules():
            if not isinstance(norm, _BatchNorm):
                continue
            own = norm.__dict__.get("forward")
            if own is None:
                norm.forward = MethodType(_lane_safe_batch_norm, norm)
            elif getattr(own, "__func__", None) is not _lane_safe_batch_norm:
                continue
            _patched_norms[id(norm)] = _patched_norms.get(id(norm), 0) + 1
            norms.append(norm)
    try:
        yield
    finally:
        with _patch_lock:
            for norm in norms:
                users = _patched_norms.pop(id(norm)) - 1
                if users:
                    _patched_norms[id(norm)] = users
                else:
                    del norm.forward


# Dynamo cannot yet trace graph breaks inside vmap, so a compiled model runs its
# autosampled forward eagerly (one graph break); code around it still compiles.
@torch.compiler.disable
def sampled_call(
    module: torch.nn.Module,
    call: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    samples: Optional[int],
    sampled_input: bool,
    record: bool,
    chunk_size: Optional[int] = None,
) -> Any:
    """Run ``call(*args, **kwargs)`` for S weight draws as the outermost module.

    Parameters
    ----------
    module : nn.Module
        The outermost module (used in error messages).
    call : callable
        Runs the module for one sample (``nn.Module.__call__``).
    args, kwargs
        The inputs. Tensors that are ``VIReturn`` (positional or keyword) and, if
        ``sampled_input``, all positional tensors carry a leading sample dimension;
        other keyword arguments are shared by all samples.
    samples : int or None
        S; ``None`` takes it from sampled inputs or uses :data:`DEFAULT_SAMPLES`.
    sampled_input : bool
        Whether all positional tensors carry the sample dimension.
    record : bool
        Whether to record and return log-probabilities.
    chunk_size : int, optional
        Run the samples in chunks of this many lanes to bound the memory of
        intermediate results (most useful for prediction with many samples).
    """
    owner = type(module).__name__
    if samples is not None:
        samples = _check_samples(owner, samples)
    if chunk_size is not None:
        chunk_size = check_int(owner, "chunk_size", chunk_size)
    _check_devices(module, owner, args, kwargs)
    # Keyword arguments that are VIReturns are sampled inputs too: they travel to the
    # lanes as extra positional arguments and are put back by name there.
    sampled_names = [k for k, v in kwargs.items() if isinstance(v, VIReturn)]
    shared_kwargs = {k: v for k, v in kwargs.items() if k not in sampled_names}
    positional = len(args)
    in_dims = []
    inputs = []
    incoming: list[Tensor] = []
    sizes = set()
    for index, arg in enumerate((*args, *(kwargs[k] for k in sampled_names))):
        if isinstance(arg, Tensor) and (
            (sampled_input and index < positional) or isinstance(arg, VIReturn)
        ):
            if arg.dim() == 0:
                raise ShapeError(
                    f"{owner}: a sampled input needs a leading sample dimension, got a "
                    "0-d tensor"
                )
            if isinstance(arg, VIReturn):
                if arg.log_probs is not None and all(
                    arg.log_probs is not t for t in incoming
                ):
                    incoming.append(arg.log_probs)
                arg = arg.as_plain()
            sizes.add(arg.shape[0])
            in_dims.append(0)
        else:
            in_dims.append(None)
        inputs.append(arg)
    if len(sizes) > 1:
        raise ShapeError(
            f"{owner}: sampled inputs disagree on the number of samples: {sorted(sizes)}"
        )
    if sizes:
        (size,) = sizes
        if samples is not None and samples != size:
            raise ShapeError(
                f"{owner}: samples={samples} but the sampled input carries {size} samples"
            )
        samples = size
    elif samples is None:
        samples = 1 if mean_weights_enabled() else DEFAULT_SAMPLES
    record = record and not mean_weights_enabled()

    structure: dict[str, Any] = {}

    def one_sample(_lane: Tensor, *lane_args: Any) -> tuple[Any, ...]:
        state = SamplingState(record, min(samples, chunk_size or samples))
        previous = current_state()
        _local.state = state
        lane_kwargs = dict(zip(sampled_names, lane_args[positional:]), **shared_kwargs)
        try:
            output = call(*lane_args[:positional], **lane_kwargs)
        finally:
            _local.state = previous
        leaves, spec = tree_flatten(output)
        structure["spec"] = spec
        structure["leaves"] = leaves
        tensors = tuple(leaf for leaf in leaves if isinstance(leaf, Tensor))
        log_probs = state.total() if record else None
        if log_probs is None:
            log_probs = _lane.new_zeros(2, dtype=_log_prob_dtype(module))
        structure["callbacks"] = [callback for callback, _ in state.deferred]
        return tensors, log_probs, tuple(value for _, value in state.deferred)

    device = next((a.device for a in inputs if isinstance(a, Tensor)), None)
    lane = torch.empty(samples, 0, device=device)
    with _lane_safe_batch_norms(module), lane_attention(module):
        tensors, log_probs, deferred = torch.vmap(
            one_sample,
            in_dims=(0, *in_dims),
            randomness="different",
            chunk_size=chunk_size,
        )(lane, *inputs)
    for callback, values in zip(structure["callbacks"], deferred):
        callback(values)

    if record:
        for extra in incoming:
            log_probs = log_probs + extra.to(log_probs)
    else:
        log_probs = None
    wrapped = iter(VIReturn(t, log_probs) for t in tensors)
    leaves = [
        next(wrapped) if isinstance(leaf, Tensor) else leaf for leaf in structure["leaves"]
    ]
    return tree_unflatten(leaves, structure["spec"])


def _check_devices(module: torch.nn.Module, owner: str, args: tuple, kwargs: dict) -> None:
    """Raise for input tensors on the meta device given to a model that is not (or back).

    Other device mismatches raise in the first operation that mixes them; a meta
    tensor mixed with a CPU one would instead give uninitialised memory.
    """
    parameter = next(module.parameters(), None)
    if parameter is None:
        return
    meta = parameter.device.type == "meta"
    for leaf in (*args, *kwargs.values()):
        if isinstance(leaf, Tensor) and (leaf.device.type == "meta") != meta:
            raise RuntimeError(
                f"{owner}: an input is on device {leaf.device} but the parameters are "
                f"on {parameter.device}; move the model or the input"
            )


def _log_prob_dtype(module: torch.nn.Module) -> torch.dtype:
    """The log-probs' dtype for the parameters' floating dtype (at least float32)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return log_prob_dtype(parameter.dtype)
    return torch.get_default_dtype()
