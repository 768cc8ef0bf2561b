"""Argument descriptions that many docstrings of :mod:`torch_blue.uncertainty` share.

In the docstring of a function decorated with :func:`_shared_doc`, a line such as
``{samples, input_type}`` (names of :data:`_PARTS`, in the order of the signature) is
replaced by those descriptions, indented like the line. Each is then written once.
"""

from collections.abc import Callable
from typing import TypeVar

_F = TypeVar("_F", bound=Callable)

_PARTS = {
    "samples": """samples : Tensor
    Logits or probabilities of shape ``(S, ..., C)``.""",
    "input_type": """input_type : {"probs", "logits"}, default: "probs"
    What ``samples`` holds.""",
    "targets": """targets : Tensor
    Integer class indices of shape ``(...)``.""",
    "n_bins": """n_bins : int, default: 15
    Number of bins of width ``1 / n_bins``.""",
    "means": """means : Tensor
    Samples of the predicted mean, shape ``(S, ...)``.""",
    "stds": """stds : Tensor or float or None, default: None
    Aleatoric standard deviation: ``None``, a number, or a tensor broadcastable
    to ``means``.""",
    "ax": """ax : matplotlib.axes.Axes, optional
    Where to draw; a new figure when ``None``.""",
}


def _shared_doc(fn: _F) -> _F:
    """Fill the shared parts into ``fn``'s docstring (see the module docstring)."""
    lines = []
    for line in (fn.__doc__ or "").splitlines():
        text = line.strip()
        names = [name.strip() for name in text[1:-1].split(",")]
        if text[:1] + text[-1:] == "{}" and all(name in _PARTS for name in names):
            indent = line[: len(line) - len(line.lstrip())]
            for name in names:
                lines.extend(indent + part for part in _PARTS[name].splitlines())
        else:
            lines.append(line)
    fn.__doc__ = "\n".join(lines)
    return fn
