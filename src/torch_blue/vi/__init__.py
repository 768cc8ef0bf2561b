"""Variational inference: Bayesian layers, containers and losses.

Swap ``nn.Linear`` for :class:`VILinear`, ``nn.Sequential`` for :class:`VISequential`
and ``nn.CrossEntropyLoss`` for ``KullbackLeiblerLoss(Categorical(), dataset_size)``.
"""

from .analytical_kl_loss import (
    AnalyticalKullbackLeiblerLoss,
    KullbackLeiblerModule,
    NonBayesianDivergence,
    NormalNormalDivergence,
    UniformNormalDivergence,
)
from .base import VIModule
from .conv import VIConv1d, VIConv2d, VIConv3d
from .deterministic import mean_weights, to_deterministic
from .kl_loss import KullbackLeiblerLoss
from .linear import VILinear
from .sequential import VIResidualConnection, VISequential
from .utils.common_types import VIkwargs
from .utils.convert import convert_to_vimodule
from .utils.vi_return import VIReturn

__all__ = [
    "AnalyticalKullbackLeiblerLoss",
    "KullbackLeiblerLoss",
    "KullbackLeiblerModule",
    "NonBayesianDivergence",
    "NormalNormalDivergence",
    "UniformNormalDivergence",
    "VIConv1d",
    "VIConv2d",
    "VIConv3d",
    "VILinear",
    "VIModule",
    "VIResidualConnection",
    "VIReturn",
    "VISequential",
    "VIkwargs",
    "convert_to_vimodule",
    "mean_weights",
    "to_deterministic",
]
