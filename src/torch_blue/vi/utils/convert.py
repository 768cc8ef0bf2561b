"""Turn any ``torch.nn`` model Bayesian in one call: :func:`convert_to_vimodule`.

Modules with a built-in twin (``nn.Linear`` -> ``VILinear``, ``nn.Conv2d`` ->
``VIConv2d``, ``nn.Sequential`` -> ``VISequential``, ...) become that twin; any other
module with parameters gets a generated class whose parameters are random variables
of the same names and shapes and whose ``forward`` is the original one; modules
without parameters stay as they are, and containers holding Bayesian modules become
Bayesian containers so that the whole model samples once per call. Normalisation
layers stay deterministic unless :func:`convert_norms` says otherwise;
:func:`ban_convert` controls the rest.
"""

from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn

from ..base import TORCH_TWINS, VIModule
from ..distributions import Prior, VariationalDistribution
from ..distributions.defaults import DEFAULT_PRIOR, DEFAULT_VARIATIONAL_DISTRIBUTION
from .errors import TorchBlueError
from .init import fixed_

__all__ = ["ban_convert", "convert_norms", "convert_to_vimodule"]

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
    """Set whether :func:`convert_to_vimodule` converts ``torch.nn`` norm layers.

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
    if not isinstance(mode, bool):
        raise TypeError(f"convert_norms: mode must be a bool, got {mode!r}")
    if mode:
        _banlists["ban"].difference_update(_TORCH_NORMS)
    else:
        _banlists["ban"].update(_TORCH_NORMS)


def ban_convert(
    class_names: Union[type[nn.Module], list[type[nn.Module]]],
    ban_mode: str = "ban",
    unban: bool = False,
) -> None:
    """Exclude module classes from parts of :func:`convert_to_vimodule`.

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
    :func:`convert_norms` is on. The original devices and dtypes are kept per
    parameter.

    The conversion is in place, so references to the model and its submodules stay
    valid; the model is also returned. Convert first, then wrap in
    ``DistributedDataParallel``, then build the optimizer. A generated class runs the
    original ``forward`` under ``torch.vmap``: forwards that write to parameters or
    keep parameter references (as ``nn.LSTM`` does, which therefore has a twin) need
    a twin or :func:`ban_convert`.

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

    Returns
    -------
    nn.Module
        ``module`` itself, converted.

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
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"convert_to_vimodule: module must be an nn.Module, got {type(module).__name__}"
        )
    vikwargs = dict(
        variational_distribution=variational_distribution,
        prior=prior,
        rescale_prior=rescale_prior,
        kaiming_initialization=kaiming_initialization,
        prior_initialization=prior_initialization,
        return_log_probs=return_log_probs,
    )
    _convert(module, bool(keep_weights), vikwargs)
    return module


def _convert(module: nn.Module, keep_weights: bool, vikwargs: dict) -> bool:
    """Convert ``module`` in place; return whether it is (now) Bayesian inside."""
    cls = type(module)
    if isinstance(module, VIModule):
        return True
    if cls in _banlists["submodule"]:
        return False
    banned = cls in _banlists["ban"]
    twin = None if cls in _banlists["replace"] else TORCH_TWINS.get(cls)
    if (
        twin is not None
        and not banned
        and not getattr(twin, "_convert_children_first", False)
    ):
        _replace_by_twin(module, twin, keep_weights, vikwargs)
        return True
    bayesian_inside = False
    for child in module.children():
        bayesian_inside |= _convert(child, keep_weights, vikwargs)
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
