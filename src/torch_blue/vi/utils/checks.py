"""Argument checks shared by the layers, losses and helpers."""

import math
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

__all__ = [
    "check_bool",
    "check_input_dtype",
    "check_int",
    "check_positive_float",
    "check_probability",
    "check_weight",
    "int_tuple",
]


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is a ``bool``, else a ``TypeError`` (``1`` and ``"no"`` are not).

    Examples
    --------
    >>> check_bool("VILinear", "return_log_probs", "no")
    Traceback (most recent call last):
    ...
    TypeError: VILinear: return_log_probs must be a bool, got 'no'
    """
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {value!r}")
    return value


def check_weight(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite, non-negative float (a weight such as ``heat``).

    Examples
    --------
    >>> check_weight("KullbackLeiblerLoss", "heat", 1)
    1.0
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be finite and non-negative, got {value!r}")
    return value


def check_probability(owner: str, name: str, value: Any, note: str = "") -> float:
    """``value`` as a float in [0, 1] (a rate such as dropout), else a ``ValueError``.

    ``note`` is added to the description in the message.

    Examples
    --------
    >>> check_probability("VIMultiheadAttention", "dropout", 1)
    1.0
    >>> check_probability("VIRNN", "dropout", 1.5, " (between layers)")
    Traceback (most recent call last):
    ...
    ValueError: VIRNN: dropout must be a number in [0, 1] (between layers), got 1.5
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1]{note}, got {value!r}")
    return float(value)


def check_positive_float(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite positive float (``layer_norm_eps``), else a ``ValueError``.

    Examples
    --------
    >>> check_positive_float("VITransformerEncoderLayer", "layer_norm_eps", 0)
    Traceback (most recent call last):
    ...
    ValueError: VITransformerEncoderLayer: layer_norm_eps must be a positive number, got 0
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{owner}: {name} must be a positive number, got {value!r}")
    return float(value)


def check_int(owner: str, name: str, value: Any, minimum: int = 1, note: str = "") -> int:
    """``value`` as a Python ``int`` of at least ``minimum``, or a ``ValueError``.

    Any integer type counts (NumPy's too, as sizes often come from arrays); ``bool``
    does not. ``note`` is added to the description in the message.

    Examples
    --------
    >>> import numpy as np
    >>> check_int("VILinear", "in_features", np.int64(3))
    3
    >>> check_int("VILinear", "in_features", 0)
    Traceback (most recent call last):
    ...
    ValueError: VILinear: in_features must be a positive int, got 0
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        if minimum == 1:
            kind = "a positive int"
        elif minimum == 0:
            kind = "a non-negative int"
        else:
            kind = f"an int of at least {minimum}"
        raise ValueError(f"{owner}: {name} must be {kind}{note}, got {value!r}")
    return int(value)


def int_tuple(owner: str, name: str, value: Any, dims: int, minimum: int) -> tuple:
    """``value`` (an int or a sequence of ``dims``) as a ``dims``-tuple of ints.

    Each entry must be at least ``minimum``; a wrong length is an error here, at
    construction, not at the first forward.

    Examples
    --------
    >>> int_tuple("VIConv2d", "stride", 2, 2, 1)
    (2, 2)
    >>> int_tuple("Conv", "size", (3, 3, 3), 2, 1)
    Traceback (most recent call last):
    ...
    ValueError: Conv: size must be a positive int or a tuple of 2 of them, got (3, 3, 3)
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims
    if len(values) != dims or not all(
        isinstance(v, Integral) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        kind = "positive" if minimum > 0 else "non-negative"
        raise ValueError(
            f"{owner}: {name} must be a {kind} int or a tuple of {dims} of them, got "
            f"{value!r}"
        )
    return tuple(int(v) for v in values)


def check_input_dtype(module: Module, input_: Any) -> None:
    """Raise a ``TypeError`` naming ``module`` for an input its weights cannot take.

    The input must be a tensor of the parameters' dtype (outside autocast, which
    casts), as ``torch.nn``'s layers require; a list, a NumPy array or an integer
    tensor would otherwise fail deep inside with an unrelated message.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> try:
    ...     check_input_dtype(VILinear(2, 1), torch.ones(3, 2, dtype=torch.long))
    ... except TypeError as error:
    ...     print(str(error).split(";")[0])
    VILinear: the input's dtype torch.int64 is not the parameters' torch.float32
    """
    owner = type(module).__name__
    if not isinstance(input_, Tensor):
        raise TypeError(
            f"{owner}: the input must be a Tensor, got {type(input_).__name__} "
            "(convert it with torch.as_tensor)"
        )
    parameter = next(iter(module._parameters.values()), None)
    if parameter is None:  # a container: its first parameter anywhere
        parameter = next(module.parameters(), None)
    if (
        parameter is not None
        and input_.dtype != parameter.dtype
        and not torch.is_autocast_enabled(input_.device.type)
    ):
        raise TypeError(
            f"{owner}: the input's dtype {input_.dtype} is not the parameters' "
            f"{parameter.dtype}; convert it (input.to({parameter.dtype})) or the model"
        )
