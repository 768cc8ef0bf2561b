r"""The radial variational distribution (Farquhar, Osborne & Gal, 2020).

A weight tensor with :math:`D` elements is drawn as

.. math::
    w = \mu + \sigma \odot \frac{\epsilon}{\lVert\epsilon\rVert}\, r,\qquad
    \epsilon \sim \mathcal N(0, I_D),\quad r \sim \mathcal N(0, 1):

a uniformly random direction with a Normal radius. The standardised noise
:math:`z = (w - \mu)/\sigma` has norm :math:`|r|` instead of the
:math:`\approx\sqrt D` of a mean-field Normal, which avoids the "soap bubble" of
high-dimensional Gaussians and gives lower-variance gradients. In hyperspherical
coordinates its exact log-density is

.. math::
    \log q(w) = \log 2 + \log\mathcal N(\rho; 0, 1) - \log A_D - (D - 1)\log\rho
    - \textstyle\sum_i \log\sigma_i,\qquad \rho = \lVert z\rVert,\quad
    A_D = \frac{2\pi^{D/2}}{\Gamma(D/2)}

(:math:`A_D` the area of the unit sphere in :math:`\mathbb R^D`), and its entropy is
:math:`\sum_i\log\sigma_i` plus a constant that depends on :math:`D` alone.
"""

import math

import torch
from torch import Tensor

from ..functional.densities import HALF_LOG_2PI
from ..utils.checks import check_bool
from ..utils.use_norm_constants import norm_constants_enabled
from .base import VariationalDistribution, _finite, _positive

__all__ = ["RadialNormal"]

_EULER_GAMMA = 0.5772156649015329
# E log|r| for r ~ N(0, 1)
_EXPECTED_LOG_RADIUS = -0.5 * (_EULER_GAMMA + math.log(2.0))


def _radial_constant(dimension: int) -> float:
    """The constant of log q: log 2 N(0; 0, 1) - log A_D (+ D/2 log 2 pi without)."""
    log_area = (
        math.log(2.0) + 0.5 * dimension * math.log(math.pi) - math.lgamma(0.5 * dimension)
    )
    constant = 0.5 * math.log(2.0 / math.pi) - log_area
    if not norm_constants_enabled():
        constant += dimension * HALF_LOG_2PI
    return constant


class RadialNormal(VariationalDistribution):
    r"""Radial variational distribution: random direction, Normal radius.

    See :mod:`torch_blue.vi.distributions.radial` for the definition and density.
    Parameters are ``("mean", "log_std")`` per weight, as for
    :class:`~torch_blue.vi.distributions.MeanFieldNormal`, and they initialise the
    same way; but a weight's marginal standard deviation is
    :math:`\sigma_i/\sqrt D` (:meth:`marginal_std`), since the whole noise vector has
    unit expected squared norm. The point estimate (mean-weight mode) is ``mean``.

    The direction is drawn for the whole weight tensor (one radial distribution per
    random variable), or, with ``per_unit=True``, separately for each slice along
    the first dimension (each output unit of a linear or convolutional layer; a
    bias then gets one Normal per element). The log-density does not factorise over
    elements: :meth:`log_prob` spreads the joint log-density of each group evenly
    over its elements (only its sums are meaningful) and treats the trailing
    ``mean.dim()`` dimensions of ``sample`` as one weight tensor.

    The KL divergence from a :class:`~torch_blue.vi.distributions.MeanFieldNormal`
    (or :class:`~torch_blue.vi.distributions.EmpiricalNormalPrior`) prior has a
    closed form (exact entropy, and :math:`\mathbb E[z_i^2] = 1/D` in the
    cross-entropy); with other priors the losses estimate it by Monte Carlo. The
    local reparameterisation and Flipout estimators do not apply (the weights are
    correlated); layers draw the weights. Without normalisation constants the
    :math:`\frac D2\log 2\pi` a Normal drops is dropped, so the KL divergence from a
    Normal prior does not change.

    Parameters
    ----------
    mean : float, default: 0.0
        Initial mean (the layer's initialisation overrides it with Kaiming-uniform).
    std : float, default: 1.0
        Initial :math:`\sigma` before Kaiming scaling. Must be positive.
    per_unit : bool, default: False
        One radial distribution per slice along the first dimension instead of one
        per weight tensor.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2, variational_distribution=RadialNormal())
    >>> layer(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    >>> RadialNormal(std=0.1, per_unit=True)
    RadialNormal(std=0.1, per_unit=True)
    """

    distribution_parameters = ("mean", "log_std")

    def __init__(self, mean: float = 0.0, std: float = 1.0, per_unit: bool = False) -> None:
        name = type(self).__name__
        self.mean = _finite(name, "mean", mean)
        self.log_std = math.log(_positive(name, "std", std, squared=True))
        self.per_unit = check_bool(name, "per_unit", per_unit)

    def _repr_args(self) -> str:
        args = f"std={math.exp(self.log_std):g}"
        return args + (", per_unit=True" if self.per_unit else "")

    @property
    def _default_variational_parameters(self) -> tuple[float, float]:
        return self.mean, self.log_std

    def _group_shape(self, shape: torch.Size) -> tuple[int, int]:
        """(number of groups G, elements per group D) for a weight of ``shape``."""
        numel = math.prod(shape)
        if self.per_unit and len(shape) > 0:
            return shape[0], numel // shape[0]
        return 1, numel

    def _grouped(self, tensor: Tensor, weight_dim: int) -> Tensor:
        """``(..., G, D)`` view; the trailing ``weight_dim`` dims are one weight tensor."""
        batch = tensor.shape[: tensor.dim() - weight_dim]
        groups, dimension = self._group_shape(tensor.shape[tensor.dim() - weight_dim :])
        return tensor.reshape(*batch, groups, dimension)

    def _standard_noise(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised noise ``z`` shaped like ``like`` and the radii ``(G, 1)``."""
        groups, _ = self._group_shape(like.shape)
        noise = self._grouped(torch.randn_like(like), like.dim())
        radius = torch.randn((groups, 1), dtype=like.dtype, device=like.device)
        direction = noise / torch.linalg.vector_norm(noise, dim=-1, keepdim=True)
        return (direction * radius).reshape(like.shape), radius

    def sample(self, parameters: tuple[Tensor, Tensor]) -> Tensor:
        r"""Reparameterised sample :math:`\mu + \sigma\odot z`."""
        mean, log_std = parameters
        z, _ = self._standard_noise(mean)
        return torch.addcmul(mean, torch.exp(log_std), z)

    def sample_and_log_prob(
        self, parameters: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        r"""Sample and its total log-density, computed from the radii.

        :math:`\lVert z\rVert = |r|` per group, so no norm of the sample is needed.
        """
        mean, log_std = parameters
        z, radius = self._standard_noise(mean)
        sample = torch.addcmul(mean, torch.exp(log_std), z)
        groups, dimension = self._group_shape(mean.shape)
        log_prob = (
            groups * _radial_constant(dimension)
            - 0.5 * radius.square().sum()
            - (dimension - 1) * torch.log(radius.abs()).sum()
            - log_std.sum()
        )
        return sample, log_prob

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Joint log-density of each group, spread evenly over its elements."""
        mean, log_std = parameters
        weight_dim = mean.dim()
        z = (sample - mean) * torch.exp(-log_std)
        grouped = self._grouped(z, weight_dim)
        dimension = grouped.shape[-1]
        squared = grouped.square().sum(-1, keepdim=True)
        joint = (
            _radial_constant(dimension)
            - 0.5 * squared
            - 0.5 * (dimension - 1) * torch.log(squared)
        )
        spread = (joint / dimension).expand(grouped.shape).reshape(z.shape)
        return spread - log_std

    def entropy(self, parameters: tuple[Tensor, Tensor]) -> Tensor:
        r"""Exact entropy :math:`H[q]` of the whole weight tensor (0-d)."""
        mean, log_std = parameters
        groups, dimension = self._group_shape(mean.shape)
        per_group = (
            -_radial_constant(dimension) + 0.5 + (dimension - 1) * _EXPECTED_LOG_RADIUS
        )
        return log_std.sum() + groups * per_group

    def marginal_std(self, parameters: tuple[Tensor, Tensor]) -> Tensor:
        r"""Standard deviation of each weight, :math:`\sigma_i/\sqrt D`."""
        mean, log_std = parameters
        _, dimension = self._group_shape(mean.shape)
        return torch.exp(log_std) / math.sqrt(dimension)
