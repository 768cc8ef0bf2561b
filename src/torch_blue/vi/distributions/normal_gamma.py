r"""Conjugate hyperpriors on the scale of a whole weight tensor: Normal-Gamma priors.

The weights of one tensor share an unknown precision :math:`\tau` (and, for
:class:`NormalGammaPrior`, an unknown mean :math:`\mu`) with a conjugate hyperprior.
Integrating the hyperparameters out gives a closed-form joint density of the whole
tensor: a multivariate Student-t that depends on the weights through their sums of
squares. The prior thus learns the scale of each layer from its own weights (an
"unknown variance" prior) without extra variational parameters.

Both priors score *the whole tensor jointly*: :meth:`~NormalGammaPrior.prior_log_prob_sum`
(the hot path of every weight access) is the closed-form joint log-density, and the
element-wise :meth:`~NormalGammaPrior.log_prob` is its chain-rule decomposition
:math:`\log p(w_k \mid w_{<k})` in flattening order (each term a Student-t predictive
density), whose sum is the joint. For a batch of weight tensors, map over it with
``torch.vmap``. There is no closed-form KL divergence with a variational
distribution: the losses estimate it by Monte Carlo.
"""

import math

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, _finite, _positive

__all__ = ["KnownMeanNormalGammaPrior", "NormalGammaPrior"]


def _kaiming_factor(fan_in: int) -> float:
    return 1.0 / math.sqrt(3 * fan_in) if fan_in > 0 else 0.0


def _student_t(x: Tensor, alpha: Tensor, beta_scale: Tensor) -> Tensor:
    r""":math:`\log t_{2\alpha}(x; 0, \beta_s/\alpha)` with :math:`\beta_s = \nu s^2/2`."""
    return (
        torch.lgamma(alpha + 0.5)
        - torch.lgamma(alpha)
        - 0.5 * torch.log(2 * math.pi * beta_scale)
        - (alpha + 0.5) * torch.log1p(x.square() / (2 * beta_scale))
    )


class _GammaPrecisionPrior(Prior):
    """What the two Normal-Gamma priors share: rescaling and their repr."""

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        return ("loc",)

    def kaiming_rescale(self, fan_in: int, eps: float = 1e-5) -> None:
        """Scale ``loc`` by the Kaiming factor :math:`c` and the rate ``beta`` by c²."""
        already = self._rescaled
        super().kaiming_rescale(fan_in, eps)
        if not already:
            self.beta = self.beta * _kaiming_factor(fan_in) ** 2

    def _repr_args(self) -> str:
        return ", ".join(
            f"{name}={float(getattr(self, name)):g}"
            for name in self.distribution_parameters
        )


class KnownMeanNormalGammaPrior(_GammaPrecisionPrior):
    r"""Normal weights with a known mean and a shared Gamma-distributed precision.

    .. math::
        w_i \mid \tau \sim \mathcal N(m, 1/\tau)\ \text{i.i.d.},\qquad
        \tau \sim \mathrm{Gamma}(\alpha, \beta)\ \text{(rate } \beta\text{)}

    Integrating :math:`\tau` out, the :math:`n` weights of a tensor have the joint
    log-density

    .. math::
        \log p(w) = \log\Gamma(\alpha + \tfrac n2) - \log\Gamma(\alpha)
        + \alpha\log\beta - (\alpha + \tfrac n2)\log\!\big(\beta + \tfrac12
        \textstyle\sum_i (w_i - m)^2\big) - \tfrac n2 \log 2\pi,

    a multivariate Student-t with :math:`2\alpha` degrees of freedom. See the module
    documentation for how the element-wise :meth:`log_prob` decomposes it.

    Hyperparameters are ``("loc", "alpha", "beta")``. With ``rescale_prior=True``
    the weights' scale shrinks by :math:`c = 1/\sqrt{3\,\mathrm{fan}_\mathrm{in}}`, so
    ``loc`` is multiplied by :math:`c` and the rate ``beta`` by :math:`c^2` (the
    precision grows by :math:`1/c^2`); ``alpha`` stays. Without normalisation constants the
    :math:`-\frac n2\log 2\pi` is dropped.

    Parameters
    ----------
    loc : float, default: 0.0
        The known mean :math:`m` of the weights.
    alpha : float, default: 1.0
        Shape of the Gamma hyperprior on the precision. Must be positive.
    beta : float, default: 1.0
        Rate of the Gamma hyperprior on the precision. Must be positive.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> prior = KnownMeanNormalGammaPrior(alpha=2.0, beta=0.5)
    >>> prior
    KnownMeanNormalGammaPrior(loc=0, alpha=2, beta=0.5)
    >>> w = torch.randn(3, 4)
    >>> torch.allclose(prior.prior_log_prob(w).sum(), prior.prior_log_prob_sum(w))
    True
    >>> VILinear(3, 2, prior=prior)(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    """

    distribution_parameters = ("loc", "alpha", "beta")

    def __init__(self, loc: float = 0.0, alpha: float = 1.0, beta: float = 1.0) -> None:
        name = type(self).__name__
        self.loc = torch.tensor(_finite(name, "loc", loc))
        self.alpha = torch.tensor(_positive(name, "alpha", alpha))
        self.beta = torch.tensor(_positive(name, "beta", beta))

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        r"""Chain-rule terms :math:`\log p(w_k \mid w_{<k})`, shaped like ``sample``.

        Their sum is the joint log-density of the whole tensor (see the class).
        """
        loc, alpha, beta = (torch.as_tensor(p) for p in parameters)
        x = (sample - loc).flatten()
        n = x.shape[0]
        seen = torch.arange(n, device=x.device, dtype=x.dtype)
        # Hyperposterior after the first k weights: alpha + k/2, beta + sum_{<k} x^2 / 2.
        half_squares = 0.5 * x.square()
        alpha_k = alpha + 0.5 * seen
        beta_k = beta + (torch.cumsum(half_squares, 0) - half_squares)
        result = _student_t(x, alpha_k, beta_k)
        if not norm_constants_enabled():
            result = result + 0.5 * LOG_2PI
        return result.reshape(sample.shape)

    def prior_log_prob_sum(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = tuple()
    ) -> Tensor:
        """Closed-form joint log-density of the whole tensor (0-d)."""
        loc, alpha, beta = (
            p.to(device=sample.device, dtype=sample.dtype) for p in self.get_parameters()
        )
        n = sample.numel()
        squares = (sample - loc).square().sum()
        result = (
            torch.lgamma(alpha + 0.5 * n)
            - torch.lgamma(alpha)
            + alpha * torch.log(beta)
            - (alpha + 0.5 * n) * torch.log(beta + 0.5 * squares)
        )
        if norm_constants_enabled():
            result = result - 0.5 * n * LOG_2PI
        return result


class NormalGammaPrior(_GammaPrecisionPrior):
    r"""Normal weights with a shared unknown mean and precision (Normal-Gamma).

    .. math::
        w_i \mid \mu, \tau \sim \mathcal N(\mu, 1/\tau)\ \text{i.i.d.},\quad
        \mu \mid \tau \sim \mathcal N(m, 1/(\kappa\tau)),\quad
        \tau \sim \mathrm{Gamma}(\alpha, \beta)

    Integrating :math:`(\mu, \tau)` out, the :math:`n` weights of a tensor with mean
    :math:`\bar w` have the joint log-density

    .. math::
        \log p(w) = \log\Gamma(\alpha_n) - \log\Gamma(\alpha) + \alpha\log\beta
        - \alpha_n\log\beta_n + \tfrac12\log\tfrac{\kappa}{\kappa + n}
        - \tfrac n2\log 2\pi

    with :math:`\alpha_n = \alpha + \frac n2` and :math:`\beta_n = \beta + \frac12
    \sum_i (w_i - \bar w)^2 + \frac{\kappa n (\bar w - m)^2}{2(\kappa + n)}`. See the
    module documentation for how the element-wise :meth:`log_prob` decomposes it.

    Hyperparameters are ``("loc", "kappa", "alpha", "beta")``. With
    ``rescale_prior=True`` ``loc`` is multiplied by :math:`c = 1/\sqrt{3\,
    \mathrm{fan}_\mathrm{in}}` and the rate ``beta`` by :math:`c^2`; ``kappa`` and ``alpha``
    stay. Without normalisation constants the :math:`-\frac n2\log 2\pi` is dropped.

    Parameters
    ----------
    loc : float, default: 0.0
        Prior mean :math:`m` of the weights' common mean.
    kappa : float, default: 1.0
        Prior strength :math:`\kappa` of ``loc``, in pseudo-observations. Must be
        positive.
    alpha : float, default: 1.0
        Shape of the Gamma hyperprior on the precision. Must be positive.
    beta : float, default: 1.0
        Rate of the Gamma hyperprior on the precision. Must be positive.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> prior = NormalGammaPrior(kappa=2.0)
    >>> prior
    NormalGammaPrior(loc=0, kappa=2, alpha=1, beta=1)
    >>> w = torch.randn(3, 4)
    >>> torch.allclose(prior.prior_log_prob(w).sum(), prior.prior_log_prob_sum(w))
    True
    >>> VILinear(3, 2, prior=prior)(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    """

    distribution_parameters = ("loc", "kappa", "alpha", "beta")

    def __init__(
        self, loc: float = 0.0, kappa: float = 1.0, alpha: float = 1.0, beta: float = 1.0
    ) -> None:
        name = type(self).__name__
        self.loc = torch.tensor(_finite(name, "loc", loc))
        self.kappa = torch.tensor(_positive(name, "kappa", kappa))
        self.alpha = torch.tensor(_positive(name, "alpha", alpha))
        self.beta = torch.tensor(_positive(name, "beta", beta))

    def log_prob(
        self, sample: Tensor, parameters: tuple[Tensor, Tensor, Tensor, Tensor]
    ) -> Tensor:
        r"""Chain-rule terms :math:`\log p(w_k \mid w_{<k})`, shaped like ``sample``.

        Their sum is the joint log-density of the whole tensor (see the class).
        """
        loc, kappa, alpha, beta = (torch.as_tensor(p) for p in parameters)
        x = (sample - loc).flatten()
        n = x.shape[0]
        seen = torch.arange(n, device=x.device, dtype=x.dtype)
        # Hyperposterior after the first k weights (offsets from loc): kappa + k,
        # mean sum_{<k} x / (kappa + k), alpha + k/2, and beta grown by the
        # non-negative increments kappa_j (x_j - mean_j)^2 / (2 (kappa_j + 1)).
        kappa_k = kappa + seen
        mean_k = (torch.cumsum(x, 0) - x) / kappa_k
        alpha_k = alpha + 0.5 * seen
        increments = kappa_k * (x - mean_k).square() / (2 * (kappa_k + 1))
        beta_k = beta + (torch.cumsum(increments, 0) - increments)
        beta_scale = beta_k * (kappa_k + 1) / kappa_k
        result = _student_t(x - mean_k, alpha_k, beta_scale)
        if not norm_constants_enabled():
            result = result + 0.5 * LOG_2PI
        return result.reshape(sample.shape)

    def prior_log_prob_sum(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = tuple()
    ) -> Tensor:
        """Closed-form joint log-density of the whole tensor (0-d)."""
        loc, kappa, alpha, beta = (
            p.to(device=sample.device, dtype=sample.dtype) for p in self.get_parameters()
        )
        n = sample.numel()
        x = sample - loc
        mean = x.mean()
        kappa_n = kappa + n
        alpha_n = alpha + 0.5 * n
        beta_n = (
            beta
            + 0.5 * (x - mean).square().sum()
            + kappa * n * mean.square() / (2 * kappa_n)
        )
        result = (
            torch.lgamma(alpha_n)
            - torch.lgamma(alpha)
            + alpha * torch.log(beta)
            - alpha_n * torch.log(beta_n)
            + 0.5 * torch.log(kappa / kappa_n)
        )
        if norm_constants_enabled():
            result = result - 0.5 * n * LOG_2PI
        return result
