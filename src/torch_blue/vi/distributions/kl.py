r"""KL divergences between a prior and a variational distribution.

Closed forms are looked up by the pair ``(type(prior), type(variational))`` in a
registry, the way :func:`torch.distributions.kl.register_kl` works: the most specific
registered pair along both classes' MROs wins. Register your own pair with
:func:`register_kl`. Pairs without a closed form get an unbiased Monte Carlo estimate
(:func:`monte_carlo_kl_divergence`); :class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss`
picks the closed form where one is registered and the estimate otherwise.

Registered closed forms (prior, variational):

* ``(MeanFieldNormal, MeanFieldNormal)``, ``(EmpiricalNormalPrior, MeanFieldNormal)``;
* ``(UniformPrior, MeanFieldNormal)``: the negative entropy;
* ``(LaplacePrior, MeanFieldNormal)``: via the folded-Normal mean :math:`\mathbb E|w - m|`;
* ``(LogUniformPrior, MeanFieldNormal)``: the approximation of Molchanov et al. (2017);
* ``(MeanFieldNormal, RadialNormal)``, ``(EmpiricalNormalPrior, RadialNormal)``,
  ``(UniformPrior, RadialNormal)``: exact entropy and cross-entropy of the radial
  distribution;
* ``(Prior, NonBayesian)``: zero.

Mixtures, heavy-tailed and hierarchical priors (:class:`ScaleMixtureNormalPrior`,
:class:`StudentTPrior`, :class:`HorseshoePrior`, the Normal-Gamma priors,
:class:`BasicQuietPrior`) have none.
"""

import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI
from ..utils.checks import check_int
from ..utils.errors import UnsupportedDistributionError
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, VariationalDistribution, is_constant_scalar
from .empirical import EmpiricalNormalPrior
from .laplace import LaplacePrior
from .log_uniform import LogUniformPrior
from .non_bayesian import NonBayesian
from .normal import MeanFieldNormal
from .radial import RadialNormal
from .uniform import UniformPrior

__all__ = [
    "ClosedFormKL",
    "KullbackLeiblerModule",
    "NormalNormalDivergence",
    "UniformNormalDivergence",
    "NonBayesianDivergence",
    "LaplaceNormalDivergence",
    "LogUniformNormalDivergence",
    "register_kl",
    "kl_divergence",
    "has_closed_form_kl",
    "monte_carlo_kl_divergence",
    "monte_carlo_kl_draws",
]

_LOG_2 = math.log(2.0)
# Molchanov et al. (2017), sparse variational dropout
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695

KLFunction = Callable[[Prior, VariationalDistribution, Sequence[Tensor]], Tensor]
_REGISTRY: dict[tuple[type, type], KLFunction] = {}


class ClosedFormKL:
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


#: Upstream's name of :class:`ClosedFormKL` (a plain class, not an ``nn.Module``).
KullbackLeiblerModule = ClosedFormKL


class NormalNormalDivergence(ClosedFormKL):
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
        if is_constant_scalar(prior_mean) and is_constant_scalar(prior_log_std):
            # Scalar prior (the default): a few reductions instead of element-wise
            # terms, KL = P log s - sum(log std) + (|mean - m|^2 + sum(std^2)) / (2 s^2)
            # - P / 2.
            m, log_s = float(prior_mean), float(prior_log_std)
            centred = variational_mean if m == 0.0 else variational_mean - m
            spread = (
                torch.linalg.vector_norm(centred).square()
                + torch.exp(2 * variational_log_std).sum()
            )
            count = variational_log_std.numel()
            return (
                0.5 * math.exp(-2 * log_s) * spread
                - variational_log_std.sum()
                + count * (log_s - 0.5)
            )
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


class UniformNormalDivergence(ClosedFormKL):
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


class LaplaceNormalDivergence(ClosedFormKL):
    r"""KL divergence of a Normal from a Laplace prior, summed over elements.

    .. math::
        \mathrm{KL} = -H[q] + \log(2b) + \frac{\mathbb E_q|w - m|}{b},\qquad
        \mathbb E_q|w - m| = \sigma\sqrt{2/\pi}\, e^{-d^2/2\sigma^2}
        + d\,\mathrm{erf}\big(d/(\sigma\sqrt2)\big),\quad d = \mu - m

    (the mean of a folded Normal).

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(1)
    >>> round(float(LaplaceNormalDivergence.forward(0.0, 0.0, z, z)), 4)
    0.0721
    """

    @staticmethod
    def forward(
        prior_loc: Union[Tensor, float],
        prior_log_scale: Union[Tensor, float],
        variational_mean: Tensor,
        variational_log_std: Tensor,
    ) -> Tensor:
        """Summed KL from the Laplace location and log-scale and the Normal's."""
        loc = torch.as_tensor(prior_loc).to(variational_mean)
        log_scale = torch.as_tensor(prior_log_scale).to(variational_mean)
        std = torch.exp(variational_log_std)
        offset = variational_mean - loc
        expected_abs = std * math.sqrt(2 / math.pi) * torch.exp(
            -0.5 * (offset / std).square()
        ) + offset * torch.erf(offset / (std * math.sqrt(2)))
        cross_entropy = log_scale + expected_abs * torch.exp(-log_scale)
        kl = _normal_negative_entropy(variational_log_std) + cross_entropy
        if norm_constants_enabled():
            kl = kl + _LOG_2
        return kl.sum()


class LogUniformNormalDivergence(ClosedFormKL):
    r"""KL of a Normal from the log-uniform prior (Molchanov et al., 2017), summed.

    .. math::
        \mathrm{KL} \approx k_1\,\mathrm{sigmoid}(-(k_2 + k_3\log\alpha))
        + \tfrac12\log(1 + 1/\alpha),\qquad \alpha = \sigma^2/\mu^2,

    with :math:`k_1 = 0.63576, k_2 = 1.87320, k_3 = 1.48695`: an approximation (to
    within 0.01 nats per weight) of the KL divergence up to the constant that makes it
    vanish as :math:`\alpha \to \infty`. See
    :class:`~torch_blue.vi.distributions.LogUniformPrior`.

    Examples
    --------
    >>> import torch
    >>> round(float(LogUniformNormalDivergence.forward(torch.ones(1), torch.zeros(1))), 4)
    0.4312
    >>> float(LogUniformNormalDivergence.forward(torch.zeros(1), torch.zeros(1))) < 1e-30
    True
    """

    @staticmethod
    def forward(variational_mean: Tensor, variational_log_std: Tensor) -> Tensor:
        """Summed KL from the means and log standard deviations."""
        tiny = torch.finfo(variational_mean.dtype).tiny
        log_alpha = 2 * variational_log_std - torch.log(variational_mean.square() + tiny)
        kl = _K1 * torch.sigmoid(
            -(_K2 + _K3 * log_alpha)
        ) + 0.5 * torch.nn.functional.softplus(-log_alpha)
        return kl.sum()


def _normal_negative_entropy(log_std: Tensor) -> Tensor:
    """Element-wise -H of a Normal, with or without the normalisation constant."""
    value = -log_std - 0.5
    if norm_constants_enabled():
        value = value - 0.5 * LOG_2PI
    return value


class NonBayesianDivergence(ClosedFormKL):
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


def monte_carlo_kl_divergence(
    prior: Prior,
    variational: VariationalDistribution,
    parameters: Sequence[Tensor],
    samples: int = 1,
    hyperparameters: Sequence[Tensor] = (),
) -> Tensor:
    r"""Unbiased Monte Carlo estimate of :math:`\mathrm{KL}(q \| p)` for any pair.

    :math:`\frac1K\sum_{k=1}^K \big[\log q(w_k) - \log p(w_k)\big]` with
    :math:`K` = ``samples`` reparameterised draws :math:`w_k \sim q`, summed over the
    weight tensor: the same estimator as :class:`~torch_blue.vi.KullbackLeiblerLoss`,
    and differentiable with respect to the variational parameters.

    Parameters
    ----------
    prior, variational
        The pair.
    parameters : sequence of Tensor
        The variational parameters of one random variable.
    samples : int, default: 1
        Number of draws :math:`K`.
    hyperparameters : sequence of Tensor, default: ()
        The variational parameters the prior requires (``prior._required_parameters``).

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.distributions import MeanFieldNormal, StudentTPrior
    >>> params = (torch.zeros(100), torch.full((100,), -1.0))
    >>> monte_carlo_kl_divergence(StudentTPrior(), MeanFieldNormal(), params, 8).shape
    torch.Size([])
    """
    samples = check_int("monte_carlo_kl_divergence", "samples", samples)
    return monte_carlo_kl_draws(
        prior, variational, parameters, samples, hyperparameters
    ).mean()


def monte_carlo_kl_draws(
    prior: Prior,
    variational: VariationalDistribution,
    parameters: Sequence[Tensor],
    samples: int = 1,
    hyperparameters: Sequence[Tensor] = (),
    keep: Optional[Tensor] = None,
) -> Tensor:
    r"""The terms of :func:`monte_carlo_kl_divergence`, one per draw, shape ``(samples,)``.

    Term :math:`k` is :math:`\log q(w_k) - \log p(w_k)` summed over the weight
    tensor, or over its elements where the boolean mask ``keep`` is true (a pruned
    layer). Their spread gives the estimate's standard error.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi.distributions import MeanFieldNormal, StudentTPrior
    >>> params = (torch.zeros(100), torch.full((100,), -1.0))
    >>> monte_carlo_kl_draws(StudentTPrior(), MeanFieldNormal(), params, 8).shape
    torch.Size([8])
    """
    parameters = tuple(parameters)
    hyperparameters = tuple(hyperparameters)
    terms = []
    for _ in range(int(samples)):
        if keep is None:
            sample, log_q = variational.sample_and_log_prob(parameters)
            terms.append(log_q - prior.prior_log_prob_sum(sample, hyperparameters))
            continue
        sample = variational.sample(parameters)
        ratio = variational.variational_log_prob(sample, parameters) - prior.prior_log_prob(
            sample, hyperparameters
        )
        terms.append(torch.broadcast_to(ratio, sample.shape)[keep].sum())
    return torch.stack([term.reshape(()) for term in terms])


@register_kl(EmpiricalNormalPrior, MeanFieldNormal)
def _kl_empirical_normal(
    prior: EmpiricalNormalPrior, variational: MeanFieldNormal, parameters: Sequence[Tensor]
) -> Tensor:
    mean, log_std = parameters
    return NormalNormalDivergence.forward(
        prior.mean.to(mean), prior.log_std.to(mean), mean, log_std
    )


@register_kl(LaplacePrior, MeanFieldNormal)
def _kl_laplace_normal(
    prior: LaplacePrior, variational: MeanFieldNormal, parameters: Sequence[Tensor]
) -> Tensor:
    mean, log_std = parameters
    return LaplaceNormalDivergence.forward(prior.loc, prior.log_scale, mean, log_std)


@register_kl(LogUniformPrior, MeanFieldNormal)
def _kl_log_uniform_normal(
    prior: LogUniformPrior, variational: MeanFieldNormal, parameters: Sequence[Tensor]
) -> Tensor:
    mean, log_std = parameters
    return LogUniformNormalDivergence.forward(mean, log_std)


def _radial_normal_cross_entropy(
    variational: RadialNormal,
    parameters: Sequence[Tensor],
    prior_mean: Tensor,
    prior_log_std: Tensor,
) -> Tensor:
    r"""Summed :math:`-\mathbb E_q \log \mathcal N(w; m, s^2)` of a radial ``q``."""
    mean, log_std = parameters
    prior_mean = torch.as_tensor(prior_mean).to(mean)
    prior_log_std = torch.as_tensor(prior_log_std).to(mean)
    _, dimension = variational._group_shape(mean.shape)
    # E[z_i^2] = E[r^2] E[u_i^2] = 1 / D for a direction u uniform on the sphere.
    second_moment = (mean - prior_mean).square() + torch.exp(2 * log_std) / dimension
    value = prior_log_std + 0.5 * second_moment * torch.exp(-2 * prior_log_std)
    if norm_constants_enabled():
        value = value + 0.5 * LOG_2PI
    return value.expand(mean.shape).sum()


@register_kl(MeanFieldNormal, RadialNormal)
@register_kl(EmpiricalNormalPrior, RadialNormal)
def _kl_normal_radial(
    prior: Union[MeanFieldNormal, EmpiricalNormalPrior],
    variational: RadialNormal,
    parameters: Sequence[Tensor],
) -> Tensor:
    cross_entropy = _radial_normal_cross_entropy(
        variational, parameters, prior.mean, prior.log_std
    )
    return cross_entropy - variational.entropy(tuple(parameters))


@register_kl(UniformPrior, RadialNormal)
def _kl_uniform_radial(
    prior: UniformPrior, variational: RadialNormal, parameters: Sequence[Tensor]
) -> Tensor:
    return -variational.entropy(tuple(parameters))
