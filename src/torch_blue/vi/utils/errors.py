"""The exceptions torch_blue raises, re-exported from :mod:`torch_blue.errors`.

The classes are defined there; this module keeps the older import path working and
gives the same class objects, so ``isinstance`` and ``except`` behave the same.
"""

from ...errors import (
    MissingLogProbsError,
    NoVariablesError,
    ShapeError,
    TorchBlueError,
    UnsupportedDistributionError,
)

__all__ = [
    "TorchBlueError",
    "NoVariablesError",
    "UnsupportedDistributionError",
    "MissingLogProbsError",
    "ShapeError",
]
