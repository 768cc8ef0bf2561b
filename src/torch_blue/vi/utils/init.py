"""Initialisation helpers for variational parameters."""

import torch
from torch import Tensor

from .errors import ShapeError

__all__ = ["fixed_"]


def fixed_(tensor: Tensor, other: Tensor) -> Tensor:
    """Fill ``tensor`` in place with the values of ``other`` (no gradient recorded).

    Examples
    --------
    >>> import torch
    >>> fixed_(torch.empty(2), torch.tensor([1.0, 2.0]))
    tensor([1., 2.])
    """
    if tensor.shape != other.shape:
        raise ShapeError(
            f"fixed_: other has shape {tuple(other.shape)}, but the tensor to fill has "
            f"shape {tuple(tensor.shape)}; every element needs a value"
        )
    with torch.no_grad():
        return tensor.copy_(other)
