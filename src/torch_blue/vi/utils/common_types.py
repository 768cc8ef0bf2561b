"""Type aliases and the ``VIkwargs`` typed dict shared by all Bayesian layers."""

from typing import TYPE_CHECKING, Optional, TypedDict, Union

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..distributions import Prior, VariationalDistribution

__all__ = ["VIkwargs"]

_prior_any_t = Union["Prior", tuple["Prior", ...]]
_vardist_any_t = Union["VariationalDistribution", tuple["VariationalDistribution", ...]]


class VIkwargs(TypedDict):
    """The keyword arguments every Bayesian layer accepts (see ``VIModule``).

    Examples
    --------
    >>> from torch_blue.vi import VIkwargs, VILinear
    >>> from torch_blue.vi.distributions import MeanFieldNormal
    >>> kwargs = VIkwargs(variational_distribution=MeanFieldNormal(),
    ...     prior=MeanFieldNormal(std=0.1), rescale_prior=False,
    ...     kaiming_initialization=True, prior_initialization=False,
    ...     return_log_probs=True, device=None, dtype=None)
    >>> VILinear(3, 2, **kwargs).in_features
    3
    """

    variational_distribution: _vardist_any_t
    prior: _prior_any_t
    rescale_prior: bool
    kaiming_initialization: bool
    prior_initialization: bool
    return_log_probs: bool
    device: Optional[torch.device]
    dtype: Optional[torch.dtype]
