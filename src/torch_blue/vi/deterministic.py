"""Mean-weight deployment: :class:`mean_weights` and :func:`to_deterministic`.

A trained Bayesian network often ships as its *mean network*: every random variable
replaced by its point estimate (the variational mean). :class:`mean_weights` runs a
model that way in place; :func:`to_deterministic` exports it as a plain ``torch.nn``
model with no torch_blue class inside, for ``torch.jit.trace``, ``torch.export``,
ONNX or any PyTorch runtime.
"""

from copy import deepcopy
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from .base import TORCH_TWINS, VIModule
from .estimators import EstimatorLayer

# mean_weights lives with the sampling state it switches; re-exported from this room.
from .sampling import mean_weights, mean_weights_enabled
from .utils.errors import TorchBlueError

__all__ = ["mean_weights", "mean_weights_enabled", "to_deterministic"]

# Attributes VIModule keeps in the instance dict that a plain module does not need.
_VI_STATE = frozenset(
    {
        "_return_log_probs",
        "_reuse_draws",
        "_manual_log_probs",
        "variational_distribution",
        "prior",
        "_kaiming_init",
        "_prior_init",
        "_estimator",
        "_spatial_dims",
    }
)
# Class attributes of VI classes that must not reach a plain class.
_VI_CLASS_ATTRIBUTES = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__doc__",
        "__init__",
        "__init_subclass__",
        "__orig_bases__",
        "__parameters__",
        "_torch_twin",
        "_from_torch",
        "_to_torch",
        "_convert_children_first",
        "_converted_from",
    }
)
_plain_classes: dict[type, type] = {}


def to_deterministic(model: Module) -> Module:
    """Return a plain ``torch.nn`` copy of ``model`` with the mean weights.

    Every random variable becomes an ``nn.Parameter`` holding its point estimate (the
    variational mean); other parameters and buffers are copied. Built-in layers
    become their ``torch.nn`` twins (``VILinear`` -> ``nn.Linear``, ``VISequential``
    -> ``nn.Sequential``, ...); a custom ``VIModule`` becomes an instance of a plain
    ``nn.Module`` class with the same methods, its random variables as parameters of
    the same names; a module made by :func:`~torch_blue.vi.convert_to_vimodule`
    returns to its original class. The result contains no torch_blue class, computes
    exactly what ``model`` computes under :class:`mean_weights` (without the sample
    dimension) and can be traced with ``torch.jit.trace`` or exported with
    ``torch.export``. ``model`` is not changed.

    A custom module's methods are reused as they are, so they must not call
    ``super()`` without arguments (the plain class is not a subclass of the
    original); its ``__init__`` is not run.

    Parameters
    ----------
    model : nn.Module
        A model containing Bayesian modules (plain modules inside are copied).

    Returns
    -------
    nn.Module
        The deterministic mean network, in the same training/eval mode.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue import vi
    >>> model = vi.VISequential(vi.VILinear(4, 8), nn.ReLU(), vi.VILinear(8, 2))
    >>> plain = vi.to_deterministic(model)
    >>> plain
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    >>> x = torch.randn(3, 4)
    >>> with vi.mean_weights():
    ...     expected = model(x)[0]
    >>> torch.equal(plain(x), expected)
    True
    """
    if not isinstance(model, Module):
        raise TypeError(
            f"to_deterministic: model must be an nn.Module, got {type(model).__name__}"
        )
    with torch.no_grad():
        return _convert(model)


def _convert(module: Module) -> Module:
    if isinstance(module, VIModule):
        cls = type(module)
        if cls._torch_twin is not None and TORCH_TWINS.get(cls._torch_twin) is cls:
            twin = module._to_torch()
            _fill(twin, module)
            twin.train(module.training)
            return twin
        return _plain_copy(module)
    if not any(isinstance(m, VIModule) for m in module.modules()):
        return deepcopy(module)
    new = _shallow_instance(type(module), module)
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else _convert(child)
    return new


def _shallow_instance(cls: type, module: Module, skip: frozenset = frozenset()) -> Module:
    """A ``cls`` instance with deep copies of ``module``'s own state, no children."""
    new = cls.__new__(cls)
    memo: dict[int, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_modules" or key in skip:
            continue
        new.__dict__[key] = deepcopy(value, memo)
    new.__dict__["_modules"] = {}
    return new


def _plain_copy(module: VIModule) -> Module:
    cls = type(module)
    plain_cls = _plain_class(cls)
    new = _shallow_instance(plain_cls, module, skip=_VI_STATE | {"_parameters"})
    variational = module.__dict__.get("variational_distribution") or {}
    own = {
        module.variational_parameter_name(variable, parameter)
        for variable, dist in variational.items()
        if dist is not None
        for parameter in dist.distribution_parameters
    }
    new.__dict__["_parameters"] = {
        name: deepcopy(value)
        for name, value in module._parameters.items()
        if name not in own
    }
    for variable, dist in variational.items():
        if dist is None:
            new._parameters[variable] = None
            continue
        estimate = dist.point_estimate(tuple(module.get_variational_parameters(variable)))
        new._parameters[variable] = Parameter(estimate.detach().clone())
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else _convert(child)
    return new


def _plain_class(cls: type) -> type:
    """A plain ``nn.Module`` class with the methods of the VI class ``cls``."""
    if cls in _plain_classes:
        return _plain_classes[cls]
    original = cls.__dict__.get("_converted_from")
    if original is not None:  # made by convert_to_vimodule: back to the original
        _plain_classes[cls] = original
        return original
    base = next(
        k for k in cls.__mro__ if issubclass(k, Module) and not issubclass(k, VIModule)
    )
    namespace: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, VIModule) and klass is not VIModule:
            namespace.update(
                (k, v) for k, v in vars(klass).items() if k not in _VI_CLASS_ATTRIBUTES
            )
    if issubclass(cls, EstimatorLayer):
        # Built-in layers ask for sampled pre-activations first; the mean network
        # has none and reads its weights as plain parameters.
        namespace["_fast_preactivations"] = _no_fast_path
    name = cls.__name__
    if cls.__module__.startswith("torch_blue.") and name.startswith("VI"):
        name = name[2:]  # VIResidualConnection -> ResidualConnection
    namespace["__module__"] = cls.__module__
    namespace["__qualname__"] = name
    namespace["__doc__"] = f"Deterministic mean network of {cls.__qualname__}."
    plain = type(name, (base,), namespace)
    _plain_classes[cls] = plain
    return plain


def _no_fast_path(self: Module, op: Any, x: Tensor, lane_op: Any = None) -> None:
    return None


def _fill(twin: Module, module: VIModule) -> None:
    """Set ``twin``'s parameters and buffers by name from ``module``."""
    for key, target in twin.state_dict(keep_vars=True).items():
        source = _lookup(module, key)
        if source.shape != target.shape:
            raise TorchBlueError(
                f"to_deterministic: {type(module).__name__} entry {key!r} has shape "
                f"{tuple(source.shape)} but its torch twin expects {tuple(target.shape)}"
            )
        target.data = source.detach().clone().to(target.dtype)


def _lookup(module: Module, key: str) -> Tensor:
    """The value behind state-dict ``key`` of a twin: point estimate or tensor."""
    *path, leaf = key.split(".")
    owner = module
    for name in path:
        owner = owner._modules[name]
    if isinstance(owner, VIModule) and owner.random_variables is not None:
        variational = owner.variational_distribution
        if leaf in variational and variational[leaf] is not None:
            parameters = tuple(owner.get_variational_parameters(leaf))
            return variational[leaf].point_estimate(parameters)
    if leaf in owner._parameters and owner._parameters[leaf] is not None:
        return owner._parameters[leaf]
    if leaf in owner._buffers and owner._buffers[leaf] is not None:
        return owner._buffers[leaf]
    raise TorchBlueError(
        f"to_deterministic: {type(module).__name__} has no value for its torch twin's "
        f"entry {key!r}"
    )
