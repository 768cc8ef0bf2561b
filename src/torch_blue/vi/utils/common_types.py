"""Type aliases and the ``VIkwargs`` typed dict shared by all Bayesian layers."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, TypedDict, Union

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..distributions import Prior, VariationalDistribution

__all__ = [
    "IntOrTuple",
    "PriorSpec",
    "VIkwargs",
    "VariationalSpec",
    "check_vi_kwargs",
    "vi_kwargs",
]

#: A prior for every random variable of a layer, or one per variable in order.
PriorSpec = Union["Prior", Sequence["Prior"]]
#: A variational distribution for every random variable, or one per variable.
VariationalSpec = Union["VariationalDistribution", Sequence["VariationalDistribution"]]
#: An int for every spatial dimension, or one per dimension (convolution sizes).
IntOrTuple = Union[int, tuple[int, ...]]


class _VIkwargs(TypedDict):
    variational_distribution: VariationalSpec
    prior: PriorSpec
    rescale_prior: bool
    kaiming_initialization: bool
    prior_initialization: bool
    return_log_probs: bool
    device: Optional[torch.device]
    dtype: Optional[torch.dtype]


class VIkwargs(_VIkwargs, total=False):
    """The keyword arguments every Bayesian layer accepts (see ``VIModule``).

    ``estimator`` (see :mod:`torch_blue.vi.estimators`) is optional: layers without
    a choice of gradient estimator (containers, norms, custom modules) do not take
    it.

    Examples
    --------
    >>> from torch_blue.vi import VIkwargs, VILinear
    >>> from torch_blue.vi.distributions import MeanFieldNormal
    >>> kwargs = VIkwargs(variational_distribution=MeanFieldNormal(),
    ...     prior=MeanFieldNormal(std=0.1), rescale_prior=False,
    ...     kaiming_initialization=True, prior_initialization=False,
    ...     return_log_probs=True, device=None, dtype=None,
    ...     estimator="local_reparameterization")
    >>> VILinear(3, 2, **kwargs).estimator
    'local_reparameterization'
    """

    estimator: str


_FORWARDED = tuple(_VIkwargs.__annotations__)


def vi_kwargs(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The VIkwargs among a layer constructor's ``arguments``, to pass on.

    Layers spell the VIkwargs out in their signatures (so that positional calls keep
    working and an editor shows them) and hand them to :class:`~torch_blue.vi.VIModule` with
    ``super().__init__(variable_shapes, **vi_kwargs(locals()))``. ``estimator`` is
    not among them: a layer with estimators checks it itself.

    Examples
    --------
    >>> sorted(vi_kwargs({"device": None, "dtype": None, "prior": 1,
    ...     "variational_distribution": 2, "rescale_prior": False,
    ...     "kaiming_initialization": True, "prior_initialization": False,
    ...     "return_log_probs": True, "in_features": 3}))[:3]
    ['device', 'dtype', 'kaiming_initialization']
    """
    return {key: arguments[key] for key in _FORWARDED}


def check_vi_kwargs(owner: str, vikwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``**vikwargs`` a layer received, or a ``TypeError`` naming unknown ones.

    For layers that take the VIkwargs as ``**vikwargs: Unpack[VIkwargs]`` (those
    with no positional signature to keep).

    Examples
    --------
    >>> check_vi_kwargs("VIEmbedding", {"prior_initialization": True})
    {'prior_initialization': True}
    >>> check_vi_kwargs("VIEmbedding", {"priors": None})
    Traceback (most recent call last):
    ...
    TypeError: VIEmbedding: unexpected keyword arguments ['priors']; the VIkwargs are ...
    """
    unknown = sorted(set(vikwargs) - set(_FORWARDED))
    if unknown:
        raise TypeError(
            f"{owner}: unexpected keyword arguments {unknown}; the VIkwargs are "
            f"{', '.join(_FORWARDED)}"
        )
    return dict(vikwargs)
