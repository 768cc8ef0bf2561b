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

Inputs and outputs are pytrees: tensors nested in tuples, lists and dicts are found
and put back, and a ``PackedSequence`` travels by its ``data`` while its
``batch_sizes`` and permutations stay shared by all samples. The engine knows no
particular layer: modules that need something done around the lanes (the lane-safe
batch norm of :mod:`torch_blue.vi._lane_norm`, the attention routing of
:mod:`torch_blue.vi._lane_attention`) register a lane rule
(:func:`register_lane_rule`) when they are imported.
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import MethodType
from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .._compat import is_batched, tree_flatten, tree_unflatten
from .utils.checks import check_bool, check_int
from .utils.errors import ShapeError
from .utils.precision import log_prob_dtype
from .utils.vi_return import VIReturn

__all__ = [
    "DEFAULT_SAMPLES",
    "LaneRule",
    "SamplingState",
    "Stacked",
    "current_state",
    "fused_pays_off",
    "mean_weights",
    "lane_rules",
    "mean_weights_enabled",
    "register_lane_rule",
    "sampled_call",
]

DEFAULT_SAMPLES = 10

_local = threading.local()


class SamplingState:
    """Log-probabilities recorded during one sampled forward.

    Repeated accesses of the same random variable are averaged, different variables
    are summed.
    """

    __slots__ = ("_entries", "deferred", "draws", "lane", "lanes", "record")

    def __init__(self, record: bool, lanes: int = 1) -> None:
        self.record = record
        self.lanes = lanes  # samples run together (the vmap batch size)
        # Inside the lanes: an empty tensor per lane (vmap-batched). Adding a zero made
        # from it (``lane.sum()``) gives a tensor shared by the lanes its own copy per
        # lane, for operations that draw random numbers in place (which vmap forbids
        # on shared tensors).
        self.lane: Optional[Tensor] = None
        # (module id, variable name, or a tuple of names recorded together)
        self._entries: dict[tuple[int, Union[str, tuple[str, ...]]], list] = {}
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

    def add(
        self,
        module: torch.nn.Module,
        variable: Union[str, tuple[str, ...]],
        log_probs: Tensor,
    ) -> None:
        """Record the ``(2,)`` log-probabilities of one access of ``variable``.

        ``variable`` may be a tuple of names whose log-probabilities come summed
        (a layer's closed-form terms); each access of it counts once, as for one name.

        On the stacked path (:class:`Stacked`) they are ``(S, 2)``, one row per
        sample, and may mix with the ``(2,)`` ones of closed-form KL terms.
        """
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


@contextmanager
def running(state: SamplingState) -> Iterator[SamplingState]:
    """Make ``state`` the current state of this thread while the block runs."""
    previous = current_state()
    _local.state = state
    try:
        yield state
    finally:
        _local.state = previous


class Stacked(NamedTuple):
    """S samples computed at once by batched operations, without ``vmap``.

    A layer on the stacked path (:mod:`torch_blue.vi._stacked`) gets one of these
    with its input. Its draws then carry the sample dimension explicitly,
    ``(S, *shape)``: the same numbers that ``vmap(randomness="different")`` draws
    lane by lane, so both paths give the same values under a seed.

    Examples
    --------
    >>> Stacked(samples=4, input_stacked=False).input_lanes()
    4
    >>> Stacked(4, True).per_sample((4, 32, 13))
    (32, 13)
    """

    #: S, the number of samples.
    samples: int
    #: Whether the input carries the samples as its dimension 0 (``False``: the input
    #: is shared by all samples, e.g. the data entering the first layer).
    input_stacked: bool

    def input_lanes(self) -> Optional[int]:
        """S when draws shaped like the input need the sample dimension, else None."""
        return None if self.input_stacked else self.samples

    def per_sample(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape one sample of a tensor shaped like the input has."""
        return tuple(shape[1:]) if self.input_stacked else tuple(shape)


#: Fewest elements (per call, over all lanes) for which the fused autograd functions
#: of torch_blue (Normal draws, local reparameterisation, lane convolutions) beat the
#: plain formulas. Their ``vmap`` rules run in Python, a fixed cost per call, while
#: they save a little per element; small layers keep the plain path.
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
        self.mode = check_bool("mean_weights", "mode", mode)
        self._previous: list[bool] = []

    def __enter__(self) -> "mean_weights":
        self._previous.append(mean_weights_enabled())
        _local.mean_weights = self.mode
        return self

    def __exit__(self, *exc: object) -> None:
        _local.mean_weights = self._previous.pop()


#: Most samples one call may draw (more overflows tensor sizes).
MAX_SAMPLES = 2**31 - 1


def check_samples(owner: str, samples: Any) -> int:
    samples = check_int(owner, "samples", samples)
    if samples > MAX_SAMPLES:
        raise ValueError(f"{owner}: samples must be at most {MAX_SAMPLES}, got {samples}")
    return samples


#: A lane rule: ``rule(model)`` gives a context entered around ``model``'s lanes.
LaneRule = Callable[[torch.nn.Module], AbstractContextManager]

# name -> rule, registered by the modules that own the layer knowledge
_LANE_RULES: dict[str, LaneRule] = {}


def register_lane_rule(name: str, rule: LaneRule) -> None:
    """Enter ``rule(model)`` around the lanes of every sampled forward of a model.

    The engine knows no particular layer: a module that needs something done while
    the lanes run (plain batch norms given a lane-safe forward, attention routed to
    one kernel call for all lanes) registers a rule under its ``name`` on import.
    Registering a name again replaces its rule.
    The stacked path (:mod:`torch_blue.vi._stacked`) runs no lanes and enters no
    rules; it takes no module that would need one.

    Examples
    --------
    >>> from contextlib import nullcontext
    >>> register_lane_rule("example", lambda model: nullcontext())
    >>> "example" in lane_rules()
    True
    >>> del _LANE_RULES["example"]
    """
    _LANE_RULES[name] = rule


# id(module) -> sampled forwards (of any thread) running with its forward replaced
_patched_forwards: dict[int, int] = {}
_patch_lock = threading.Lock()


@contextmanager
def lane_forwards(
    model: torch.nn.Module,
    select: Callable[[torch.nn.Module], bool],
    forward: Callable[..., Any],
) -> Iterator[None]:
    """Give the modules of ``model`` that ``select`` picks the forward ``forward``.

    For lane rules that make plain ``torch.nn`` layers lane-safe. ``forward(self,
    ...)`` becomes an instance attribute, shared by threads calling the same model at
    once: the first call installs it and the last removes it (counted under a lock),
    so ``forward`` decides per call (e.g. by :func:`current_state`) what to run. A
    forward the user set on an instance is left alone.
    """
    patched = []
    with _patch_lock:
        for module in model.modules():
            if not select(module):
                continue
            own = module.__dict__.get("forward")
            if own is None:
                module.forward = MethodType(forward, module)
            elif getattr(own, "__func__", None) is not forward:
                continue
            _patched_forwards[id(module)] = _patched_forwards.get(id(module), 0) + 1
            patched.append(module)
    try:
        yield
    finally:
        with _patch_lock:
            for module in patched:
                users = _patched_forwards.pop(id(module)) - 1
                if users:
                    _patched_forwards[id(module)] = users
                else:
                    del module.forward


def lane_rules() -> dict[str, LaneRule]:
    """The registered lane rules by name (a copy, in registration order)."""
    return dict(_LANE_RULES)


@contextmanager
def _in_lane_rules(module: torch.nn.Module) -> Iterator[None]:
    """Enter every registered lane rule for ``module``."""
    with ExitStack() as stack:
        for rule in list(_LANE_RULES.values()):
            stack.enter_context(rule(module))
        yield


def _is_packed(leaf: Any) -> bool:
    return isinstance(leaf, PackedSequence)


class _Inputs:
    """The arguments of one call, flattened to leaves; which of them are sampled.

    A ``PackedSequence`` is a leaf whose ``data`` may be sampled; its ``batch_sizes``
    and permutations are shared by all lanes and never gain a sample dimension.
    """

    def __init__(self, owner: str, args: tuple, kwargs: dict, sampled_input: bool):
        self.leaves, self.spec = tree_flatten((args, kwargs), is_leaf=_is_packed)
        positional = len(tree_flatten(args, is_leaf=_is_packed)[0])
        self.layouts: dict[int, tuple] = {}  # leaf index -> PackedSequence metadata
        self.sampled: list[int] = []  # indices of the sampled leaves
        self.tensors: list[Tensor] = []  # their plain data, (S, ...)
        self.incoming: list[Tensor] = []  # log-probs of VIReturn inputs, each once
        self.sizes: set[int] = set()
        for index, leaf in enumerate(self.leaves):
            data = leaf.data if _is_packed(leaf) else leaf
            if isinstance(data, Tensor) and (
                isinstance(data, VIReturn) or (sampled_input and index < positional)
            ):
                if _is_packed(leaf):
                    self.layouts[index] = tuple(leaf)[1:]
                self.sampled.append(index)
                self.tensors.append(self._sample_data(owner, data))

    def _sample_data(self, owner: str, tensor: Tensor) -> Tensor:
        if tensor.dim() == 0:
            raise ShapeError(
                f"{owner}: a sampled input needs a leading sample dimension, got a "
                "0-d tensor"
            )
        if isinstance(tensor, VIReturn):
            log_probs = tensor.log_probs
            if log_probs is not None and all(log_probs is not t for t in self.incoming):
                self.incoming.append(log_probs)
            tensor = tensor.as_plain()
        self.sizes.add(tensor.shape[0])
        return tensor

    def tensor_leaves(self) -> Iterator[Tensor]:
        """Every input tensor (of a ``PackedSequence``: its ``data``)."""
        for leaf in self.leaves:
            data = leaf.data if _is_packed(leaf) else leaf
            if isinstance(data, Tensor):
                yield data

    def rebuild(self, tensors: tuple[Tensor, ...]) -> tuple[tuple, dict]:
        """``(args, kwargs)`` for one lane, given its slices of the sampled leaves."""
        leaves = list(self.leaves)
        for index, tensor in zip(self.sampled, tensors):
            layout = self.layouts.get(index)
            leaves[index] = tensor if layout is None else PackedSequence(tensor, *layout)
        return tree_unflatten(leaves, self.spec)


def resolve_samples(owner: str, samples: Optional[int], sizes: set[int]) -> int:
    """S: the sampled inputs' sample count, ``samples`` or the default."""
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
        return size
    if samples is None:
        return 1 if mean_weights_enabled() else DEFAULT_SAMPLES
    return samples


class _Outputs:
    """The structure of a lane's output: its tensor leaves travel through vmap.

    A ``PackedSequence`` output travels by its ``data``; its ``batch_sizes`` and
    permutations, which must not depend on the sample, are kept as they are.
    """

    def __init__(self, owner: str, output: Any) -> None:
        self.leaves, self.spec = tree_flatten(output, is_leaf=_is_packed)
        for leaf in self.leaves:
            if _is_packed(leaf) and any(
                isinstance(t, Tensor) and is_batched(t) for t in tuple(leaf)[1:]
            ):
                raise ShapeError(
                    f"{owner}: a PackedSequence output's batch_sizes or permutations "
                    "differ per weight sample; only its data may depend on the sample"
                )

    def tensors(self) -> tuple[Tensor, ...]:
        """The tensor leaves (of a ``PackedSequence``: its ``data``), in order."""
        datas = (leaf.data if _is_packed(leaf) else leaf for leaf in self.leaves)
        return tuple(data for data in datas if isinstance(data, Tensor))

    def wrap(self, tensors: tuple[Tensor, ...], log_probs: Optional[Tensor]) -> Any:
        """The output with every tensor leaf, stacked over the lanes, a ``VIReturn``."""
        wrapped = iter(VIReturn(t, log_probs) for t in tensors)
        leaves = []
        for leaf in self.leaves:
            if _is_packed(leaf) and isinstance(leaf.data, Tensor):
                leaf = PackedSequence(next(wrapped), *tuple(leaf)[1:])
            elif isinstance(leaf, Tensor):
                leaf = next(wrapped)
            leaves.append(leaf)
        return tree_unflatten(leaves, self.spec)


class _Lane:
    """The function vmapped over the lanes: one sample of ``call``."""

    def __init__(
        self,
        module: torch.nn.Module,
        call: Callable[..., Any],
        inputs: _Inputs,
        record: bool,
        lanes: int,
    ) -> None:
        self.module = module
        self.call = call
        self.inputs = inputs
        self.record = record
        self.lanes = lanes
        self.outputs: Optional[_Outputs] = None  # set by the (last) traced call
        self.callbacks: list[Callable[[Tensor], None]] = []

    def __call__(self, lane: Tensor, *sampled: Tensor) -> tuple[Any, ...]:
        state = SamplingState(self.record, self.lanes)
        state.lane = lane
        args, kwargs = self.inputs.rebuild(sampled)
        with running(state):
            output = self.call(*args, **kwargs)
        self.outputs = _Outputs(type(self.module).__name__, output)
        log_probs = state.total() if self.record else None
        if log_probs is None:
            log_probs = lane.new_zeros(2, dtype=module_log_prob_dtype(self.module))
        self.callbacks = [callback for callback, _ in state.deferred]
        deferred = tuple(value for _, value in state.deferred)
        return self.outputs.tensors(), log_probs, deferred


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
        The outermost module (used in error messages and by the lane rules).
    call : callable
        Runs the module for one sample (``nn.Module.__call__``).
    args, kwargs
        The inputs, nested tuples, lists, dicts and ``PackedSequence`` s of them
        included. Tensors that are ``VIReturn`` (anywhere) and, if ``sampled_input``,
        all tensors in ``args`` carry a leading sample dimension (of a
        ``PackedSequence``: its ``data``); the other inputs are shared by all samples.
    samples : int or None
        S; ``None`` takes it from sampled inputs or uses :data:`DEFAULT_SAMPLES`.
    sampled_input : bool
        Whether all positional tensors carry the sample dimension.
    record : bool
        Whether to record and return log-probabilities.
    chunk_size : int, optional
        Run the samples in chunks of this many lanes to bound the memory of
        intermediate results (most useful for prediction with many samples).

    Returns
    -------
    The output of ``call`` with every tensor leaf (of a ``PackedSequence``: its
    ``data``) a :class:`~torch_blue.vi.VIReturn` with the sample dimension first.
    """
    owner = type(module).__name__
    if samples is not None:
        samples = check_samples(owner, samples)
    if chunk_size is not None:
        chunk_size = check_int(owner, "chunk_size", chunk_size)
    inputs = _Inputs(owner, args, kwargs, sampled_input)
    check_devices(module, owner, inputs.tensor_leaves())
    samples = resolve_samples(owner, samples, inputs.sizes)
    record = record and not mean_weights_enabled()
    lane = _Lane(module, call, inputs, record, min(samples, chunk_size or samples))
    tensors, log_probs = _run_lanes(module, lane, samples, chunk_size)
    if record:
        for extra in inputs.incoming:
            log_probs = log_probs + extra.to(log_probs)
    else:
        log_probs = None
    return lane.outputs.wrap(tensors, log_probs)


def _run_lanes(
    module: torch.nn.Module, lane: _Lane, samples: int, chunk_size: Optional[int]
) -> tuple[tuple[Tensor, ...], Tensor]:
    """Run ``lane`` over S lanes (vmap) under the lane rules, then the deferred updates."""
    tensors = lane.inputs.tensors
    device = next((t.device for t in lane.inputs.tensor_leaves()), None)
    lanes = torch.empty(samples, 0, device=device)
    with _in_lane_rules(module):
        outputs, log_probs, deferred = torch.vmap(
            lane, randomness="different", chunk_size=chunk_size
        )(lanes, *tensors)
    for callback, values in zip(lane.callbacks, deferred):
        callback(values)
    return outputs, log_probs


def check_devices(module: torch.nn.Module, owner: str, tensors: Iterator[Tensor]) -> None:
    """Raise for input tensors on the meta device given to a model that is not (or back).

    Other device mismatches raise in the first operation that mixes them; a meta
    tensor mixed with a CPU one would instead give uninitialised memory.
    """
    parameter = next(module.parameters(), None)
    if parameter is None:
        return
    meta = parameter.device.type == "meta"
    for leaf in tensors:
        if (leaf.device.type == "meta") != meta:
            raise RuntimeError(
                f"{owner}: an input is on device {leaf.device} but the parameters are "
                f"on {parameter.device}; move the model or the input"
            )


def module_log_prob_dtype(module: torch.nn.Module) -> torch.dtype:
    """The log-probs' dtype for the parameters' floating dtype (at least float32)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return log_prob_dtype(parameter.dtype)
    return torch.get_default_dtype()
