"""Conversion between ``torch.nn`` models and Bayesian ones, both ways, and MOPED.

* :func:`~torch_blue.vi.convert_to_vimodule` turns any ``torch.nn`` model Bayesian in
  one call. Modules with a built-in twin (``nn.Linear`` -> ``VILinear``,
  ``nn.Conv2d`` -> ``VIConv2d``, ``nn.Sequential`` -> ``VISequential``, ...) become
  that twin; any other module with parameters gets a generated class whose
  parameters are random variables of the same names and shapes and whose
  ``forward`` is the original one; modules without parameters stay as they are, and
  containers holding Bayesian modules become Bayesian containers so that the whole
  model samples once per call. Normalisation layers stay deterministic unless
  :func:`convert_norms` says otherwise; :func:`ban_convert` controls the rest.
* :func:`~torch_blue.vi.to_deterministic` goes back: a plain ``torch.nn`` copy with
  the mean weights, for ``torch.jit.trace``, ``torch.export``, ONNX or any PyTorch
  runtime.
* :func:`~torch_blue.vi.moped` starts variational inference from a trained
  deterministic network (empirical priors centred on its weights).

A layer takes part by naming its twin and the constructor arguments it shares with
it (``_torch_twin`` and ``_twin_arguments``, see :class:`~torch_blue.vi.VIModule`);
both directions are derived from that declaration.
"""

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import Module, Parameter

from .base import TORCH_TWINS, VIModule, named_random_variables
from .distributions import Prior, VariationalDistribution
from .distributions.base import _positive
from .distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .distributions.empirical import EmpiricalNormalPrior
from .estimators import EstimatorLayer
from .sampling import register_lane_rule
from .selection import ModuleSelection, Selection, select_modules
from .utils.checks import check_bool
from .utils.errors import ShapeError, TorchBlueError
from .utils.init import fixed_

__all__ = [
    "ban_convert",
    "convert_norms",
    "convert_to_vimodule",
    "moped",
    "to_deterministic",
]

# ---------------------------------------------------------------- torch -> Bayesian
_TORCH_NORMS = frozenset(
    {
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.LazyBatchNorm1d,
        nn.LazyBatchNorm2d,
        nn.LazyBatchNorm3d,
        nn.SyncBatchNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
        nn.LazyInstanceNorm1d,
        nn.LazyInstanceNorm2d,
        nn.LazyInstanceNorm3d,
        nn.LocalResponseNorm,
        nn.CrossMapLRN2d,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.RMSNorm,
    }
)
# Holders of modules without a forward of their own: their children are converted,
# they stay.
_HOLDERS = frozenset({nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict})

_BAN_MODES = ("ban", "submodule", "reuse", "replace")
_banlists: dict[str, set[type]] = {
    "ban": set(_TORCH_NORMS) | set(_HOLDERS),
    "submodule": set(),
    "reuse": set(),
    "replace": set(),
}
_generated: dict[type, type] = {}
# When convert_to_vimodule's prior is left at the default, twins with a prior default
# of their own (norm layers: a scale prior centred at 1) keep theirs.
_DEFAULT_PRIOR = DEFAULT_PRIOR


def convert_norms(mode: bool = True) -> None:
    """Set whether :func:`~torch_blue.vi.convert_to_vimodule` converts norm layers.

    Norms are there for stability and stay deterministic by default. With
    ``mode=True`` the norms with a Bayesian twin (batch and layer norms) become it and
    the other norms get a generated class; ``mode=False`` restores the default.

    Examples
    --------
    >>> from torch import nn
    >>> from torch_blue.vi.utils.convert import convert_norms
    >>> convert_norms(True)   # Bayesian affine parameters in converted norms
    >>> convert_norms(False)  # back to the default
    """
    check_bool("convert_norms", "mode", mode)
    if mode:
        _banlists["ban"].difference_update(_TORCH_NORMS)
    else:
        _banlists["ban"].update(_TORCH_NORMS)


def ban_convert(
    class_names: Union[type[nn.Module], list[type[nn.Module]]],
    ban_mode: str = "ban",
    unban: bool = False,
) -> None:
    """Exclude module classes from parts of :func:`~torch_blue.vi.convert_to_vimodule`.

    Parameters
    ----------
    class_names : type or list of types
        ``nn.Module`` classes (exact classes: subclasses are not affected).
    ban_mode : str, default: "ban"
        ``"ban"``: the module stays as it is; its submodules are still converted.
        ``"submodule"``: the module and everything inside it stay as they are.
        ``"reuse"``: each converted instance gets its own generated class instead of
        one shared per original class.
        ``"replace"``: use a generated class even where a built-in twin exists.
    unban : bool, default: False
        Remove the classes from that list instead.

    Examples
    --------
    >>> from torch import nn
    >>> from torch_blue.vi.utils.convert import ban_convert
    >>> ban_convert(nn.Embedding)               # keep embeddings deterministic
    >>> ban_convert(nn.Embedding, unban=True)   # undo
    """
    if ban_mode not in _BAN_MODES:
        raise ValueError(
            f"ban_convert: ban_mode must be one of {_BAN_MODES}, got {ban_mode!r}"
        )
    classes = [class_names] if isinstance(class_names, type) else list(class_names)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(
                f"ban_convert: class_names must hold nn.Module classes, got {cls!r}"
            )
    if unban:
        _banlists[ban_mode].difference_update(classes)
    else:
        _banlists[ban_mode].update(classes)


def convert_to_vimodule(
    module: nn.Module,
    keep_weights: bool = False,
    variational_distribution: Union[
        VariationalDistribution, Sequence[VariationalDistribution]
    ] = DEFAULT_VARIATIONAL_DISTRIBUTION,
    prior: Union[Prior, Sequence[Prior]] = _DEFAULT_PRIOR,
    rescale_prior: bool = False,
    kaiming_initialization: bool = True,
    prior_initialization: bool = False,
    return_log_probs: bool = True,
    *,
    include: Optional[ModuleSelection] = None,
    exclude: Optional[ModuleSelection] = None,
) -> nn.Module:
    """Make ``module`` Bayesian, in place.

    Every module inside with parameters becomes a :class:`~torch_blue.vi.VIModule`:
    its built-in twin where one exists (``nn.Linear``, ``nn.Conv*d``,
    ``nn.ConvTranspose*d``, ``nn.Embedding``, recurrent layers, attention and
    transformer layers, ``nn.Sequential``), otherwise a generated class ``AVI<Name>``
    with the original ``forward`` and the parameters turned into random variables of
    the same names and shapes. Parameter-free modules stay as they are; containers
    holding Bayesian modules become Bayesian containers, so the converted model draws
    its samples once per call. Norm layers stay deterministic unless
    :func:`~torch_blue.vi.convert.convert_norms` is on. The original devices and
    dtypes are kept per parameter.

    The conversion is in place, so references to the model and its submodules stay
    valid; the model is also returned. Convert first, then wrap in
    ``DistributedDataParallel``, then build the optimizer. A generated class runs the
    original ``forward`` under ``torch.vmap``: forwards that write to parameters or
    keep parameter references (as ``nn.LSTM`` does, which therefore has a twin) need
    a twin or :func:`~torch_blue.vi.convert.ban_convert`.

    Parameters
    ----------
    module : nn.Module
        The model to convert.
    keep_weights : bool, default: False
        Use the current weights as the primary variational parameter (the mean) and
        keep buffers such as running statistics; otherwise everything is initialised
        afresh.
    variational_distribution, prior, rescale_prior, kaiming_initialization, \
prior_initialization, return_log_probs
        The VIkwargs of :class:`~torch_blue.vi.VIModule`, used for every converted
        module. Left at its default, ``prior`` is the standard Normal, except for
        twins with their own default (the norm layers' scale prior is centred at 1).
    include, exclude : name pattern, nn.Module class, predicate or list of these, optional
        Make only part of the model Bayesian: the subtrees that ``include`` matches
        (all of the model by default), without those that ``exclude`` matches (see
        :func:`~torch_blue.vi.selection.select_modules`). ``include="head"`` makes a
        last layer called ``head`` Bayesian. Modules that were not chosen keep their
        class, weights and ``requires_grad`` and run once per weight sample. A module
        that an ``include`` entry names, by its exact name or its class (``"norm"``,
        ``nn.LayerNorm``; not a pattern with wildcards or a predicate), is converted
        even where a ban list, e.g. for norm layers, would keep it.
        Every entry must match some module, and something with parameters must be
        chosen.

    Returns
    -------
    nn.Module
        ``module`` itself, converted.

    Raises
    ------
    TypeError
        When ``module`` is not an ``nn.Module`` or ``include``/``exclude`` hold
        something else than name patterns, module classes and predicates.
    ValueError
        When an ``include``/``exclude`` entry matches no module, or they choose no
        module with parameters.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.vi import convert_to_vimodule
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> convert_to_vimodule(model)
    VISequential(
      (0): VILinear(in_features=4, out_features=8, bias=True, ...)
      (1): ReLU()
      (2): VILinear(in_features=8, out_features=2, bias=True, ...)
    )
    >>> model(torch.randn(3, 4), samples=5).shape
    torch.Size([5, 3, 2])

    Only the last layer, starting from trained weights:

    >>> trained = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> convert_to_vimodule(trained, keep_weights=True, include="2")
    VISequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): VILinear(in_features=8, out_features=2, bias=True, ...)
    )
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"convert_to_vimodule: module must be an nn.Module, got {type(module).__name__}"
        )
    selection = None
    if include is not None or exclude is not None:
        selection = select_modules(module, include, exclude, fn="convert_to_vimodule")
    vikwargs = dict(
        variational_distribution=variational_distribution,
        prior=prior,
        rescale_prior=rescale_prior,
        kaiming_initialization=kaiming_initialization,
        prior_initialization=prior_initialization,
        return_log_probs=return_log_probs,
    )
    bayesian = _to_bayesian(module, bool(keep_weights), vikwargs, selection)
    if selection is not None and not bayesian:
        raise ValueError(
            "convert_to_vimodule: include/exclude choose no module with parameters "
            f"in {type(module).__name__}, so nothing became Bayesian"
        )
    return module


def _to_bayesian(
    module: nn.Module,
    keep_weights: bool,
    vikwargs: dict,
    selection: Optional[Selection] = None,
) -> bool:
    """Convert ``module`` in place; return whether it is (now) Bayesian inside."""
    cls = type(module)
    if isinstance(module, VIModule):
        return True
    if selection is not None and module not in selection:
        return _keep_deterministic(module, keep_weights, vikwargs, selection)
    # A module that include names itself is converted even where a ban list says no.
    named = selection is not None and id(module) in selection.direct
    if cls in _banlists["submodule"] and not named:
        return False
    banned = cls in _banlists["ban"] and not named
    twin = None if cls in _banlists["replace"] else TORCH_TWINS.get(cls)
    if twin is not None and selection is not None and not _wholly_chosen(module, selection):
        if not getattr(twin, "_convert_children_first", False):
            twin = None  # a twin would convert the parts that exclude keeps
    if (
        twin is not None
        and not banned
        and not getattr(twin, "_convert_children_first", False)
    ):
        _replace_by_twin(module, twin, keep_weights, vikwargs)
        return True
    bayesian_inside = False
    for child in module.children():
        bayesian_inside |= _to_bayesian(child, keep_weights, vikwargs, selection)
    if banned:
        return bayesian_inside
    has_parameters = any(p is not None for p in module._parameters.values())
    if twin is not None:
        if bayesian_inside or has_parameters:
            _replace_by_twin(module, twin, keep_weights, vikwargs)
        return bayesian_inside or has_parameters
    if has_parameters or bayesian_inside:
        _convert_generic(module, keep_weights, vikwargs)
        return True
    return False


def _wholly_chosen(module: nn.Module, selection: Selection) -> bool:
    return all(id(m) in selection.chosen for m in module.modules())


def _keep_deterministic(
    module: nn.Module, keep_weights: bool, vikwargs: dict, selection: Selection
) -> bool:
    """Leave a module that was not chosen as it is, but sample through it.

    Its own parameters stay plain parameters. When chosen modules lie inside, it
    becomes a Bayesian container (a ``VISequential`` or a generated class with the
    original ``forward``) so that the whole model draws its samples once per call.
    """
    bayesian_inside = False
    for child in module.children():
        bayesian_inside |= _to_bayesian(child, keep_weights, vikwargs, selection)
    if not bayesian_inside:
        return False
    twin = TORCH_TWINS.get(type(module))
    if twin is not None and getattr(twin, "_convert_children_first", False):
        _replace_by_twin(module, twin, False, vikwargs)
    else:
        module.__class__ = _generated_class(type(module))
        VIModule.__init__(module, None, convert_overwrite=True, **_log_probs_only(vikwargs))
    return True


def _replace_by_twin(
    module: nn.Module, twin: type[VIModule], keep_weights: bool, vikwargs: dict
) -> None:
    state = module.state_dict() if keep_weights else {}
    if vikwargs["prior"] is _DEFAULT_PRIOR:
        vikwargs = {k: v for k, v in vikwargs.items() if k != "prior"}
    new = twin._from_torch(module, **vikwargs)
    for key, value in state.items():
        _assign(new, key, value, type(module).__name__)
    _transplant(module, new)


def _transplant(module: nn.Module, new: nn.Module) -> None:
    """Make ``module`` become ``new`` (same object, so references stay valid)."""
    training = module.training
    module.__dict__.clear()
    module.__dict__.update(new.__dict__)
    module.__class__ = type(new)
    module.train(training)


def _assign(new: nn.Module, key: str, value: Tensor, source: str) -> None:
    *path, leaf = key.split(".")
    owner = new
    for name in path:
        owner = owner._modules[name]
    if isinstance(owner, VIModule) and owner.random_variables is not None:
        variational = owner.variational_distribution
        if leaf in variational and variational[leaf] is not None:
            primary = variational[leaf].primary_parameter
            fixed_(getattr(owner, owner.variational_parameter_name(leaf, primary)), value)
            return
    target = owner._parameters.get(leaf)
    if target is None:
        target = owner._buffers.get(leaf)
    if target is None:
        raise TorchBlueError(
            f"convert_to_vimodule: the twin {type(new).__name__} of {source} has no "
            f"entry {key!r} to keep"
        )
    with torch.no_grad():
        target.copy_(value)


def _generated_class(cls: type[nn.Module]) -> type:
    if cls in _generated and cls not in _banlists["reuse"]:
        return _generated[cls]
    new_cls = type(
        "AVI" + cls.__name__,
        (VIModule, cls),
        {
            "forward": cls.forward,
            "_converted_from": cls,
            "__module__": cls.__module__,
            "__doc__": f"{cls.__qualname__} with its parameters as random variables "
            "(made by convert_to_vimodule).",
        },
    )
    if cls not in _banlists["reuse"]:
        _generated[cls] = new_cls
    return new_cls


def _convert_generic(module: nn.Module, keep_weights: bool, vikwargs: dict) -> None:
    parameters = dict(module._parameters)
    module.__class__ = _generated_class(type(module))
    if not any(p is not None for p in parameters.values()):
        VIModule.__init__(module, None, convert_overwrite=True, **_log_probs_only(vikwargs))
        return
    module._parameters = {}
    shapes = {n: None if p is None else tuple(p.shape) for n, p in parameters.items()}
    kinds = {(p.device, p.dtype) for p in parameters.values() if p is not None}
    factory: dict[str, Any] = {}
    if len(kinds) == 1:
        ((factory["device"], factory["dtype"]),) = kinds
    VIModule.__init__(module, shapes, convert_overwrite=True, **vikwargs, **factory)
    for name, parameter in parameters.items():
        if parameter is None:
            continue
        dist = module.variational_distribution[name]
        for role in dist.distribution_parameters:
            target = getattr(module, module.variational_parameter_name(name, role))
            if len(kinds) > 1:
                target.data = target.data.to(parameter.device, parameter.dtype)
            if keep_weights and role == dist.primary_parameter:
                fixed_(target, parameter.detach())


def _log_probs_only(vikwargs: dict) -> dict:
    return {"return_log_probs": vikwargs["return_log_probs"]}


# torch's transformer layers test, in eval mode, whether a fused inference kernel
# applies, reading their linear layers' weights; a Bayesian part there would draw on
# that read (one more draw, recorded) and its forward would not run. While the lanes
# of a model holding such a layer run, torch's fast path is off (a global switch,
# restored by the last call to leave).
_FUSED_TORCH_LAYERS = (nn.TransformerEncoder, nn.TransformerEncoderLayer)
_fast_path = {"users": 0, "saved": True}
_fast_path_lock = threading.Lock()


def _holds_bayesian_parts(layer: Module) -> bool:
    return any(isinstance(m, VIModule) for m in layer.modules() if m is not layer)


@contextmanager
def torch_fast_path_off(model: Module) -> Iterator[None]:
    """Lane rule ``"torch_fast_path"``: transformer layers take torch's Python path.

    Only for models where a plain transformer layer holds Bayesian parts (partial
    conversion, adapters).
    """
    if not any(
        isinstance(m, _FUSED_TORCH_LAYERS) and _holds_bayesian_parts(m)
        for m in model.modules()
    ):
        yield
        return
    with _fast_path_lock:
        if _fast_path["users"] == 0:
            _fast_path["saved"] = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _fast_path["users"] += 1
    try:
        yield
    finally:
        with _fast_path_lock:
            _fast_path["users"] -= 1
            if _fast_path["users"] == 0:
                torch.backends.mha.set_fastpath_enabled(_fast_path["saved"])


register_lane_rule("torch_fast_path", torch_fast_path_off)


# ---------------------------------------------------------------- Bayesian -> torch
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
        return _to_plain(model, {})


def _to_plain(module: Module, done: dict[int, Module]) -> Module:
    """The plain copy of ``module``; a module used in several places is copied once."""
    if id(module) not in done:
        done[id(module)] = _plain_of(module, done)
    return done[id(module)]


def _plain_children(module: Module, done: dict[int, Module]) -> dict[str, Optional[Module]]:
    return {
        name: None if child is None else _to_plain(child, done)
        for name, child in module._modules.items()
    }


def _plain_of(module: Module, done: dict[int, Module]) -> Module:
    if isinstance(module, VIModule):
        own = module._to_deterministic()
        if own is not None:
            return own
        cls = type(module)
        if cls._torch_twin is not None and TORCH_TWINS.get(cls._torch_twin) is cls:
            if getattr(cls, "_convert_children_first", False):  # a container shell
                twin = cls._torch_twin(OrderedDict(_plain_children(module, done)))
            else:
                twin = module._to_torch()
                _fill(twin, module)
            twin.train(module.training)
            return twin
        return _plain_copy(module, done)
    if not any(isinstance(m, VIModule) for m in module.modules()):
        return deepcopy(module)
    new = _shallow_instance(type(module), module)
    new._modules.update(_plain_children(module, done))
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


def _plain_copy(module: VIModule, done: dict[int, Module]) -> Module:
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
    new._modules.update(_plain_children(module, done))
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


# ---------------------------------------------------------------- MOPED
def moped(
    model: nn.Module,
    weights: Union[nn.Module, Mapping[str, Tensor], None] = None,
    delta: float = 0.1,
    *,
    min_std: float = 1e-6,
    initialize: bool = True,
) -> nn.Module:
    r"""Give every random variable of ``model`` a MOPED prior from trained weights.

    For each weight tensor :math:`\hat w` of the trained deterministic network, the
    prior becomes :class:`EmpiricalNormalPrior` with mean :math:`\hat w` and standard
    deviation :math:`\max(\delta|\hat w|, \mathrm{min\_std})` (the floor keeps weights
    that are exactly zero valid), attached as buffers of the layer. With
    ``initialize`` the variational distribution starts there too: its location is
    :math:`\hat w`, its ``log_std`` (or ``log_scale``) the log of that standard
    deviation (Krishnan, Subedar & Tickoo, 2020).

    Parameters
    ----------
    model : nn.Module
        The Bayesian model (e.g. from :func:`~torch_blue.vi.convert_to_vimodule`).
        Changed in place.
    weights : nn.Module or mapping, optional
        The trained deterministic network with the same architecture, or its state
        dict: the value of random variable ``v`` of the submodule at path ``p`` is
        entry ``"p.v"`` (the names of the ``torch.nn`` twin, e.g. ``"0.weight"``).
        Other entries (buffers such as running statistics) are ignored. ``None``
        takes the model's current point estimates, e.g. after
        ``convert_to_vimodule(trained, keep_weights=True)``.
    delta : float, default: 0.1
        Ratio :math:`\delta` of prior standard deviation to weight magnitude. Must be
        positive.
    min_std : float, default: 1e-6
        Floor of the standard deviations. Must be positive.
    initialize : bool, default: True
        Also set the variational parameters as described above.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    KeyError
        When ``weights`` lacks a random variable of ``model`` (all are named).
    ShapeError
        When a weight's shape differs from its random variable's.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_blue.vi import convert_to_vimodule
    >>> trained = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> model = convert_to_vimodule(nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
    ...                                           nn.Linear(8, 2)))
    >>> _ = moped(model, trained, delta=0.1)
    >>> torch.equal(model[0]._weight_mean, trained[0].weight)
    True
    >>> model[2].prior["bias"]
    EmpiricalNormalPrior(shape=(2,), attached)
    """
    delta = _positive("moped", "delta", delta)
    min_std = _positive("moped", "min_std", min_std, squared=True)
    if isinstance(weights, nn.Module):
        source: Optional[Mapping[str, Tensor]] = weights.state_dict()
    elif weights is None or isinstance(weights, Mapping):
        source = weights
    else:
        raise TypeError(
            "moped: weights must be an nn.Module, a state dict or None, got "
            f"{type(weights).__name__}"
        )
    plan = []
    missing = []
    for key, _, module, variable in named_random_variables(model):
        dist = module.variational_distribution[variable]
        parameters = tuple(module.get_variational_parameters(variable))
        if source is None:
            value = dist.point_estimate(parameters)
        elif key in source:
            value = torch.as_tensor(source[key])
        else:
            missing.append(key)
            continue
        reference = parameters[dist.distribution_parameters.index(dist.primary_parameter)]
        if value.shape != reference.shape:
            raise ShapeError(
                f"moped: weights entry {key!r} has shape {tuple(value.shape)}, but the "
                f"random variable has shape {tuple(reference.shape)}"
            )
        plan.append((module, variable, value.detach().to(reference)))
    if missing:
        raise KeyError(f"moped: weights has no entries for the random variables {missing}")
    for module, variable, value in plan:
        std = (delta * value.abs()).clamp_min(min_std)
        prior = EmpiricalNormalPrior(value, std)
        prior.attach(module, variable)
        if initialize:
            module._assign_prior_values(variable, prior)
    return model
