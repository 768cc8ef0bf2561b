"""The exceptions torch_blue raises, all in one place.

Every error derives from :class:`TorchBlueError` and from the builtin exception users
would expect (``ValueError``), so both ``except`` styles work::

    Exception
    └── TorchBlueError
        ├── NoVariablesError              (also a ValueError)
        ├── UnsupportedDistributionError  (also a ValueError)
        ├── MissingLogProbsError          (also a ValueError)
        ├── ShapeError                    (also a ValueError)
        └── UncertaintyInputError         (also a ValueError)

The older import paths :mod:`torch_blue.vi.utils` (and ``torch_blue.vi.utils.errors``)
and :mod:`torch_blue.uncertainty` give the same classes. This module imports nothing
from the rest of the library, so every part of it can raise these errors.
"""

__all__ = [
    "TorchBlueError",
    "NoVariablesError",
    "UnsupportedDistributionError",
    "MissingLogProbsError",
    "ShapeError",
    "UncertaintyInputError",
]


class TorchBlueError(Exception):
    """Root of all errors raised by torch_blue."""


class NoVariablesError(TorchBlueError, ValueError):
    """A random-variable operation was asked of a module without (such) variables."""


class UnsupportedDistributionError(TorchBlueError, ValueError):
    """A distribution was used in a role it cannot play (e.g. as a prior)."""


class MissingLogProbsError(TorchBlueError, ValueError):
    """A loss needs weight log-probabilities but got a tensor without them."""


class ShapeError(TorchBlueError, ValueError):
    """An input, target or variable has a shape a module cannot work with."""


class UncertaintyInputError(TorchBlueError, ValueError):
    """An input to :mod:`torch_blue.uncertainty` has a value outside its domain.

    Raised for probabilities outside ``[0, 1]`` or not summing to one, targets that
    are not integer class indices or lie out of range, negative standard deviations,
    ``n_bins < 1`` and a ``level`` outside ``(0, 1)``. Inputs of the wrong shape raise
    :class:`ShapeError` instead.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.uncertainty import predictive_probs
    >>> try:
    ...     predictive_probs(torch.tensor([[[2.0, -1.0]]]))
    ... except ValueError as err:
    ...     print(type(err).__name__)
    UncertaintyInputError
    """
