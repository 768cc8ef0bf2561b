"""Variational inference: Bayesian layers, containers and losses.

Swap ``nn.Linear`` for :class:`VILinear`, ``nn.Sequential`` for :class:`VISequential`
and ``nn.CrossEntropyLoss`` for ``KullbackLeiblerLoss(Categorical(), dataset_size)``.
"""

# Modules that register lane rules with the engine, and upstream's module paths.
from . import _lane_attention, _lane_norm  # noqa: F401
from .adapters import (
    VILoRAConv2d,
    VILoRALinear,
    adapter_state_dict,
    add_lora,
    load_adapter_state_dict,
)
from .analytical_kl_loss import (
    AnalyticalKullbackLeiblerLoss,
    ClosedFormKL,
    KullbackLeiblerModule,
    NonBayesianDivergence,
    NormalNormalDivergence,
    UniformNormalDivergence,
)
from .base import VIModule
from .conv import VIConv1d, VIConv2d, VIConv3d
from .conv_transpose import VIConvTranspose1d, VIConvTranspose2d, VIConvTranspose3d
from .convert import convert_to_vimodule, moped, to_deterministic
from .distributions.kl import LaplaceNormalDivergence, LogUniformNormalDivergence
from .embedding import VIEmbedding
from .kl_loss import KullbackLeiblerLoss
from .linear import VILinear
from .normalization import VIBatchNorm1d, VIBatchNorm2d, VIBatchNorm3d, VILayerNorm
from .pruning import (
    compression_report,
    description_length,
    prune,
    pruning_masks,
    signal_to_noise,
)
from .rnn import VIGRU, VILSTM, VIRNN
from .sampling import mean_weights
from .schedules import (
    BlundellMinibatchWeighting,
    CyclicalKLAnnealing,
    KLSchedule,
    LinearKLWarmup,
)
from .sequential import VIResidualConnection, VISequential
from .transformer import (
    VIMultiheadAttention,
    VITransformer,
    VITransformerDecoder,
    VITransformerDecoderLayer,
    VITransformerEncoder,
    VITransformerEncoderLayer,
)
from .utils import convert as _upstream_convert_path  # noqa: F401
from .utils.common_types import VIkwargs
from .utils.vi_return import VIReturn

__all__ = [
    "AnalyticalKullbackLeiblerLoss",
    "BlundellMinibatchWeighting",
    "CyclicalKLAnnealing",
    "KLSchedule",
    "KullbackLeiblerLoss",
    "ClosedFormKL",
    "KullbackLeiblerModule",
    "LaplaceNormalDivergence",
    "LinearKLWarmup",
    "LogUniformNormalDivergence",
    "NonBayesianDivergence",
    "NormalNormalDivergence",
    "UniformNormalDivergence",
    "VIBatchNorm1d",
    "VIBatchNorm2d",
    "VIBatchNorm3d",
    "VIConv1d",
    "VIConv2d",
    "VIConv3d",
    "VIConvTranspose1d",
    "VIConvTranspose2d",
    "VIConvTranspose3d",
    "VIEmbedding",
    "VIGRU",
    "VILSTM",
    "VILayerNorm",
    "VILinear",
    "VILoRAConv2d",
    "VILoRALinear",
    "VIModule",
    "VIMultiheadAttention",
    "VIRNN",
    "VIResidualConnection",
    "VIReturn",
    "VISequential",
    "VITransformer",
    "VITransformerDecoder",
    "VITransformerDecoderLayer",
    "VITransformerEncoder",
    "VITransformerEncoderLayer",
    "VIkwargs",
    "adapter_state_dict",
    "add_lora",
    "compression_report",
    "convert_to_vimodule",
    "description_length",
    "load_adapter_state_dict",
    "mean_weights",
    "moped",
    "prune",
    "pruning_masks",
    "signal_to_noise",
    "to_deterministic",
]
