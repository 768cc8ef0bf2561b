"""Checks of the inputs to :mod:`torch_blue.uncertainty`, shared by all its functions.

Each check names the public function (``fn``) and argument (``name``) in its message and
raises :class:`~torch_blue.errors.ShapeError` for a wrong shape,
:class:`~torch_blue.errors.UncertaintyInputError` for a value outside its domain and
``TypeError`` for something that is not a tensor. Valid inputs come back as plain
tensors: a Tensor subclass such as ``VIReturn`` loses its type.
"""

import numbers
from collections.abc import Sequence
from typing import Literal, Optional, Union

import torch
from torch import Tensor

from .._compat import disable_torch_function_subclass
from ..errors import ShapeError, UncertaintyInputError

InputType = Literal["logits", "probs"]
StdLike = Union[Tensor, float, None]


# --------------------------------------------------------------------------- general
def _plain(x: object, fn: str, name: str) -> Tensor:
    """``x`` as a plain tensor: Tensor subclasses (``VIReturn``) lose their type."""
    if isinstance(x, Tensor):
        if type(x) is not Tensor:
            with disable_torch_function_subclass():
                x = x.as_subclass(Tensor)
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{fn}: {name} must be a Tensor, got {type(x).__name__}") from err


def _floating(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _plain_float(x: object, fn: str, name: str) -> Tensor:
    """``x`` as a plain floating-point tensor."""
    return _floating(_plain(x, fn, name))


def _check_choice(value: object, choices: Sequence[str], fn: str, name: str) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise UncertaintyInputError(f"{fn}: {name} must be {options}, got {value!r}")


def _check_positive_int(value: object, fn: str, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UncertaintyInputError(f"{fn}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_level(level: float, fn: str, name: str = "level") -> float:
    """``level`` as a ``float`` if it lies strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise UncertaintyInputError(
            f"{fn}: {name} must be a number strictly between 0 and 1, got {level!r}"
        )
    if not 0 < level < 1:
        raise UncertaintyInputError(
            f"{fn}: {name} must lie strictly between 0 and 1, got {level!r}"
        )
    return float(level)


def _check_binary(y: Tensor, fn: str, name: str) -> None:
    """Raise unless every element of ``y`` is a boolean or the number 0 or 1."""
    if not ((y == 0) | (y == 1)).all():
        raise UncertaintyInputError(f"{fn}: {name} must be booleans or 0/1 values")


def _check_targets_shape(t: Tensor, shape: torch.Size, fn: str, *, classes: bool) -> None:
    """Targets must have the predictions' ``shape`` without sample (and class) dim."""
    name = "samples" if classes else "means"
    end = len(shape) - 1 if classes else len(shape)
    expected = shape[1:end]
    if t.shape == expected:
        return
    hint = ""
    if t.shape == shape[:end]:
        hint = (
            f"; {name} look like a single prediction without the leading sample "
            f"dimension S (use {name}.unsqueeze(0))"
        )
    dims = "sample and class dimensions" if classes else "sample dimension"
    raise ShapeError(
        f"{fn}: targets of shape {tuple(t.shape)} do not match {name} of shape "
        f"{tuple(shape)}; expected targets of shape {tuple(expected)} (the {name}' "
        f"shape without the {dims}){hint}"
    )


# -------------------------------------------------------------------- classification
def _class_samples(samples: object, input_type: str, fn: str) -> Tensor:
    """Validated classification samples ``(S, ..., C)`` as a plain float tensor."""
    _check_choice(input_type, ("logits", "probs"), fn, "input_type")
    x = _plain_float(samples, fn, "samples")
    if x.dim() < 2:
        raise ShapeError(
            f"{fn}: samples must have shape (S, ..., C) with a leading sample "
            f"dimension S and the classes last, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[-1] == 0:
        raise ShapeError(
            f"{fn}: samples need at least one sample and one class, got shape "
            f"{tuple(x.shape)}"
        )
    if input_type == "probs":
        _check_probs(x, fn)
    return x


def _check_probs(x: Tensor, fn: str) -> None:
    # Loose enough for probabilities rounded in float16/float32, tight enough to catch
    # logits or unnormalised scores passed by mistake.
    if x.numel() == 0:
        return
    tol = max(1e-4, 10 * x.shape[-1] * torch.finfo(x.dtype).eps)
    hint = "; pass input_type='logits' for unnormalised scores"
    with torch.no_grad():
        low, high = x.min().item(), x.max().item()
        if not (low >= -tol and high <= 1 + tol):  # also catches NaN
            raise UncertaintyInputError(
                f"{fn}: samples with input_type='probs' must lie in [0, 1], found "
                f"values in [{low:.4g}, {high:.4g}]{hint}"
            )
        deviation = (x.sum(-1) - 1).abs().max().item()
        if not deviation <= tol:
            raise UncertaintyInputError(
                f"{fn}: samples with input_type='probs' must sum to one over the last "
                f"(class) dimension, but a sum deviates from 1 by {deviation:.3g} "
                f"(tolerance {tol:.1g}){hint}"
            )


def _to_probs(x: Tensor, input_type: str) -> Tensor:
    return x.softmax(-1) if input_type == "logits" else x.clamp(0, 1)


def _class_probs(samples: object, input_type: str, fn: str) -> Tensor:
    """Per-sample class probabilities ``(S, ..., C)``."""
    return _to_probs(_class_samples(samples, input_type, fn), input_type)


def _class_targets(targets: object, samples_shape: torch.Size, fn: str) -> Tensor:
    """Validated integer class targets of shape ``samples_shape[1:-1]``."""
    t = _plain(targets, fn, "targets")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise UncertaintyInputError(
            f"{fn}: targets must hold integer class indices, got dtype {t.dtype}"
        )
    _check_targets_shape(t, samples_shape, fn, classes=True)
    n_classes = samples_shape[-1]
    if t.numel() > 0:
        low, high = t.min().item(), t.max().item()
        if low < 0 or high >= n_classes:
            raise UncertaintyInputError(
                f"{fn}: targets must be class indices in [0, {n_classes - 1}], found "
                f"values in [{low}, {high}]"
            )
    return t.long()


# ------------------------------------------------------------------------ regression
def _regression_means(means: object, fn: str) -> Tensor:
    """Validated sampled means ``(S, ...)`` with ``S >= 1``, as a float tensor."""
    m = _plain_float(means, fn, "means")
    if m.dim() < 1 or m.shape[0] == 0:
        raise ShapeError(
            f"{fn}: means must have shape (S, ...) with a leading sample dimension "
            f"S >= 1, got shape {tuple(m.shape)}"
        )
    return m


def _regression_targets(targets: object, means_shape: torch.Size, fn: str) -> Tensor:
    """Validated float targets of shape ``means_shape[1:]``."""
    t = _plain_float(targets, fn, "targets")
    _check_targets_shape(t, means_shape, fn, classes=False)
    return t


def _regression_inputs(
    means: object, stds: StdLike, fn: str, *, positive: bool = False
) -> tuple[Tensor, Optional[Tensor]]:
    """Means ``(S, ...)`` and standard deviations broadcast to them (or ``None``)."""
    m = _regression_means(means, fn)
    if stds is None:
        return m, None
    if isinstance(stds, Tensor):
        s = _plain_float(stds, fn, "stds")
        dtype = torch.promote_types(m.dtype, s.dtype)
        m, s = m.to(dtype), s.to(dtype=dtype, device=m.device)
    else:
        s = torch.as_tensor(stds, dtype=m.dtype, device=m.device)
    try:
        broadcastable = torch.broadcast_shapes(s.shape, m.shape) == m.shape
    except RuntimeError:
        broadcastable = False
    if not broadcastable:
        raise ShapeError(
            f"{fn}: stds of shape {tuple(s.shape)} cannot be broadcast to means of "
            f"shape {tuple(m.shape)}; pass a number, a tensor of the means' shape "
            f"(S, ...) or one broadcastable to it"
        )
    if s.numel() > 0:
        low = s.min().item()
        if not (low > 0 if positive else low >= 0):  # also catches NaN
            kind = "positive" if positive else "non-negative"
            raise UncertaintyInputError(
                f"{fn}: stds must be {kind}, found minimum {low:.4g}"
            )
    return m, s.expand_as(m)
