"""The mean-field Student-t variational distribution."""

import math
from typing import Optional

import torch
from torch import Tensor

from ..._compat import standard_gamma
from ..functional.densities import student_t_log_density
from .base import VariationalDistribution, _finite, _positive

__all__ = ["MeanFieldStudentT", "StudentT", "student_t_log_density"]


class MeanFieldStudentT(VariationalDistribution):
    """Independent Student-t distribution per weight, as variational distribution.

    Heavier tails than :class:`~torch_blue.vi.distributions.MeanFieldNormal`.
    Parameters are ``("mean", "log_scale")``; the degrees of freedom are fixed.

    Parameters
    ----------
    mean : float, default: 0.0
        Initial mean (the layer's initialisation overrides it with Kaiming-uniform).
    scale : float, default: 1.0
        Initial scale before Kaiming scaling. Must be positive.
    degrees_of_freedom : float, default: 4.0
        Degrees of freedom. Must be positive.
    device : torch.device, optional
        Accepted for compatibility; the distribution follows the parameters' device.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2, variational_distribution=MeanFieldStudentT())
    >>> layer(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    """

    distribution_parameters = ("mean", "log_scale")

    def __init__(
        self,
        mean: float = 0.0,
        scale: float = 1.0,
        degrees_of_freedom: float = 4.0,
        device: Optional[torch.device] = None,
    ) -> None:
        name = type(self).__name__
        self.mean = _finite(name, "mean", mean)
        self.log_scale = math.log(_positive(name, "scale", scale, squared=True))
        self.degrees_of_freedom = _positive(name, "degrees_of_freedom", degrees_of_freedom)

    def _repr_args(self) -> str:
        return f"degrees_of_freedom={self.degrees_of_freedom:g}"

    @property
    def _default_variational_parameters(self) -> tuple[float, float]:
        return self.mean, self.log_scale

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Student-t log-density given ``(mean, log_scale)``."""
        mean, log_scale = parameters
        return student_t_log_density(sample, mean, log_scale, self.degrees_of_freedom)

    def _standard_sample(self, like: Tensor) -> Tensor:
        # t = z / sqrt(chi2_nu / nu) with chi2_nu = 2 * Gamma(nu / 2, 1)
        nu = self.degrees_of_freedom
        z = torch.randn_like(like)
        gamma = standard_gamma(torch.full_like(like, nu / 2))
        return z * torch.rsqrt(2.0 * gamma / nu)

    def sample(self, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Reparameterised sample ``mean + exp(log_scale) * t``."""
        mean, log_scale = parameters
        return mean + torch.exp(log_scale) * self._standard_sample(mean)


StudentT = MeanFieldStudentT
