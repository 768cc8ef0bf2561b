"""The exceptions torch_blue raises.

Every error derives from :class:`TorchBlueError` and from the builtin exception users
would expect (``ValueError``, ``TypeError``), so both ``except`` styles work.
"""

__all__ = [
    "TorchBlueError",
    "NoVariablesError",
    "UnsupportedDistributionError",
    "MissingLogProbsError",
    "ShapeError",
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
