"""Utilities: errors, the normalisation-constant switch and helpers."""

from .errors import (
    MissingLogProbsError,
    NoVariablesError,
    ShapeError,
    TorchBlueError,
    UnsupportedDistributionError,
)
from .post_init_metaclass import PostInitCallMeta
from .use_norm_constants import norm_constants, use_norm_constants

__all__ = [
    "MissingLogProbsError",
    "NoVariablesError",
    "PostInitCallMeta",
    "ShapeError",
    "TorchBlueError",
    "UnsupportedDistributionError",
    "norm_constants",
    "use_norm_constants",
]
