"""Closed-form KL divergences between a prior and a variational distribution.

KL divergences are looked up by the pair ``(type(prior), type(variational))`` in a
registry, the way :func:`torch.distributions.kl.register_kl` works: the most specific
registered pair along both classes' MROs wins. Register your own pair with
:func:`register_kl`.
"""

import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from ..utils.errors import UnsupportedDistributionError
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, VariationalDistribution
from .non_bayesian import NonBayesian, UniformPrior
from .normal import MeanFieldNormal

__all__ = [
    "KullbackLeiblerModule",
    "NormalNormalDivergence",
    "UniformNormalDivergence",
    "NonBayesianDivergence",
    "register_kl",
    "kl_divergence",
    "has_closed_form_kl",
]

KLFunction = Callable[[Prior, VariationalDistribution, Sequence[Tensor]], Tensor]
_REGISTRY: dict[tuple[type, type], KLFunction] = {}


class KullbackLeiblerModule:
    """A closed-form KL divergence between flattened prior and variational parameters.

    Calling an instance with ``(prior_parameters, variational_parameters)`` returns
    ``forward(*prior_parameters, *variational_parameters)``: the KL summed over all
    elements.
    """

    def forward(self, *input_: Optional[Tensor]) -> Tensor:
        """Return the summed KL divergence."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def __call__(  # noqa: D102
        self, prior_parameters: Sequence[Tensor], variational_parameters: Sequence[Tensor]
    ) -> Tensor:
        return self.forward(*prior_parameters, *variational_parameters)


class NormalNormalDivergence(KullbackLeiblerModule):
    r"""KL divergence of two Normals.

    :math:`\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \,\|\, \mathcal N(\mu_p, \sigma_p^2))`,
    summed over elements.

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(3)
    >>> NormalNormalDivergence.forward(0.0, 0.0, z, z)
    tensor(0.)
    """

    @staticmethod
    def forward(
        prior_mean: Union[Tensor, float],
        prior_log_std: Union[Tensor, float],
        variational_mean: Tensor,
        variational_log_std: Tensor,
    ) -> Tensor:
        """Summed KL from the means and log standard deviations."""
        log_ratio = (
            torch.as_tensor(prior_log_std).to(variational_mean) - variational_log_std
        )
        prior_var = torch.exp(2 * torch.as_tensor(prior_log_std).to(variational_mean))
        kl = (
            log_ratio
            + (torch.exp(2 * variational_log_std) + (variational_mean - prior_mean) ** 2)
            / (2 * prior_var)
            - 0.5
        )
        return kl.sum()


class UniformNormalDivergence(KullbackLeiblerModule):
    r"""KL of a Normal from the flat prior: the negative entropy :math:`-H[q]`.

    Examples
    --------
    >>> import torch
    >>> kl = UniformNormalDivergence.forward(None, torch.zeros(1), torch.zeros(1))
    >>> round(float(kl), 4)
    -1.4189
    """

    @staticmethod
    def forward(
        prior_mean: None, variational_mean: Tensor, variational_log_std: Tensor
    ) -> Tensor:
        """Summed negative entropy from the log standard deviations."""
        kl = -variational_log_std - 0.5
        if norm_constants_enabled():
            kl = kl - 0.5 * math.log(2 * math.pi)
        return kl.sum()


class NonBayesianDivergence(KullbackLeiblerModule):
    """KL term of a point estimate: zero (it has no entropy to account for)."""

    @staticmethod
    def forward(*args: Tensor) -> Tensor:
        """Return a zero on the parameters' device."""
        reference = next((a for a in reversed(args) if isinstance(a, Tensor)), None)
        if reference is None:
            return torch.zeros(())
        return reference.new_zeros(())


def register_kl(
    prior_type: type, variational_type: type
) -> Callable[[KLFunction], KLFunction]:
    """Register ``fn(prior, variational, variational_parameters) -> summed KL``.

    Examples
    --------
    >>> from torch_blue.vi.distributions import MeanFieldStudentT
    >>> @register_kl(UniformPrior, MeanFieldStudentT)
    ... def _kl_uniform_t(prior, variational, parameters):
    ...     raise NotImplementedError
    >>> has_closed_form_kl(UniformPrior(), MeanFieldStudentT())
    True
    >>> _ = _REGISTRY.pop((UniformPrior, MeanFieldStudentT))
    """
    for t, role in ((prior_type, Prior), (variational_type, VariationalDistribution)):
        if not (isinstance(t, type) and issubclass(t, role)):
            raise TypeError(f"register_kl: {t!r} is not a subclass of {role.__name__}")

    def decorator(fn: KLFunction) -> KLFunction:
        _REGISTRY[(prior_type, variational_type)] = fn
        return fn

    return decorator


def _lookup(prior: Prior, variational: VariationalDistribution) -> Optional[KLFunction]:
    best = None
    best_rank = None
    p_mro = type(prior).__mro__
    q_mro = type(variational).__mro__
    for (p_type, q_type), fn in _REGISTRY.items():
        if p_type in p_mro and q_type in q_mro:
            rank = (p_mro.index(p_type), q_mro.index(q_type))
            if best_rank is None or rank < best_rank:
                best, best_rank = fn, rank
    return best


def has_closed_form_kl(prior: Prior, variational: VariationalDistribution) -> bool:
    """Whether a closed-form KL is registered for this pair."""
    return _lookup(prior, variational) is not None


def kl_divergence(
    prior: Prior, variational: VariationalDistribution, parameters: Sequence[Tensor]
) -> Tensor:
    r"""Closed-form :math:`\mathrm{KL}(q \| p)` summed over a weight tensor.

    Raises
    ------
    UnsupportedDistributionError
        When no closed form is registered for the pair.
    """
    fn = _lookup(prior, variational)
    if fn is None:
        raise UnsupportedDistributionError(
            f"no closed-form KL divergence is registered for prior "
            f"{type(prior).__name__} and variational distribution "
            f"{type(variational).__name__}; use KullbackLeiblerLoss (Monte Carlo) or "
            "register one with torch_blue.vi.distributions.register_kl"
        )
    return fn(prior, variational, parameters)


@register_kl(MeanFieldNormal, MeanFieldNormal)
def _kl_normal_normal(
    prior: MeanFieldNormal, variational: MeanFieldNormal, parameters: Sequence[Tensor]
) -> Tensor:
    mean, log_std = parameters
    return NormalNormalDivergence.forward(prior.mean, prior.log_std, mean, log_std)


@register_kl(UniformPrior, MeanFieldNormal)
def _kl_uniform_normal(
    prior: UniformPrior, variational: MeanFieldNormal, parameters: Sequence[Tensor]
) -> Tensor:
    mean, log_std = parameters
    return UniformNormalDivergence.forward(None, mean, log_std)


@register_kl(Prior, NonBayesian)
def _kl_point_estimate(
    prior: Prior, variational: NonBayesian, parameters: Sequence[Tensor]
) -> Tensor:
    return NonBayesianDivergence.forward(*parameters)
