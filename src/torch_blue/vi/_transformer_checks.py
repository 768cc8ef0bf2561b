"""Argument and input checks of the attention and transformer layers.

Each names the layer (``owner``) in its message. The checks of the attention's own
inputs and masks are in :mod:`torch_blue.vi.attention`.
"""

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .base import VIModule
from .estimators import ESTIMATORS
from .utils.checks import check_input_dtype
from .utils.errors import ShapeError


def check_estimator(owner: str, estimator: Any) -> str:
    """``estimator`` if it names a gradient estimator, else a ``ValueError``."""
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"{owner}: estimator must be one of {ESTIMATORS}, got {estimator!r}"
        )
    return estimator


def activation_function(owner: str, activation: Any) -> Callable[[Tensor], Tensor]:
    """The activation: ``F.relu``/``F.gelu`` for their names, else the callable."""
    by_name = {"relu": F.relu, "gelu": F.gelu}
    if isinstance(activation, str) and activation in by_name:
        return by_name[activation]
    if callable(activation):
        return activation
    error = ValueError if isinstance(activation, str) else TypeError
    shown = repr(activation) if isinstance(activation, str) else type(activation).__name__
    raise error(
        f"{owner}: activation must be 'relu', 'gelu', an nn.Module or a callable, "
        f"got {shown}"
    )


def check_single_distribution(owner: str, argument: str, value: Any) -> None:
    """Refuse a sequence where one distribution for all weights is expected."""
    if isinstance(value, (tuple, list)):
        raise TypeError(
            f"{owner}: {argument} must be one distribution for all weights, got a "
            f"{type(value).__name__}; give per-variable distributions to the sub-layers"
        )


def check_module(owner: str, name: str, value: Any) -> None:
    """Refuse anything but an ``nn.Module`` or ``None``."""
    if value is not None and not isinstance(value, nn.Module):
        raise TypeError(
            f"{owner}: {name} must be an nn.Module or None, got {type(value).__name__}"
        )


def check_sequences(module: VIModule, d_model: int, **sequences: Any) -> None:
    """Check the named inputs' types, shapes and dtypes; all batched or none."""
    owner = type(module).__name__
    for name, x in sequences.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"{owner}: {name} must be a Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3) or x.shape[-1] != d_model:
            raise ShapeError(
                f"{owner}(d_model={d_model}): expected {name} of shape (L, {d_model}) "
                f"unbatched or (N, L, {d_model}) / (L, N, {d_model}) batched, got shape "
                f"{tuple(x.shape)}"
            )
    for x in sequences.values():
        check_input_dtype(module, x)
    (first_name, first), *others = sequences.items()
    for name, x in others:
        if x.dim() != first.dim():
            raise ShapeError(
                f"{owner}: {first_name} and {name} must both be batched or both "
                f"unbatched, got shapes {tuple(first.shape)} and {tuple(x.shape)}"
            )
