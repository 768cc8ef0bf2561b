"""The basic "quiet" prior: a weight's scale proportional to its mean."""

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, VariationalDistribution, _finite, _non_negative, _positive

__all__ = ["BasicQuietPrior"]


class BasicQuietPrior(Prior):
    r"""Prior whose standard deviation follows the variational mean :math:`\mu`.

    .. math::
        \log p(w \mid \mu) = \log \mathcal N(w; \mu, (r\mu)^2)
        + \log \mathcal N(\mu; m_\mu, s_\mu^2)

    with ``std_ratio`` :math:`r`. Weights whose mean is near zero are pushed to stay
    quiet (small), large weights may vary in proportion. The variational ``mean`` of
    each weight is required, so this prior pairs with a variational distribution that
    has one.

    Parameters
    ----------
    std_ratio : float, default: 1.0
        Ratio :math:`r` of standard deviation to mean. Must be positive.
    mean_mean : float, default: 0.0
        Mean of the Normal hyperprior on :math:`\mu`.
    mean_std : float, default: 1.0
        Standard deviation of that hyperprior. Must be positive.
    eps : float, default: 1e-10
        Added to variances for numerical stability.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2, prior=BasicQuietPrior(std_ratio=0.5))
    >>> layer(torch.randn(4, 3), samples=2).log_probs.shape
    torch.Size([2, 2])
    """

    distribution_parameters = ("mean", "log_std")
    _required_parameters = ("mean",)

    def __init__(
        self,
        std_ratio: float = 1.0,
        mean_mean: float = 0.0,
        mean_std: float = 1.0,
        eps: float = 1e-10,
    ) -> None:
        name = type(self).__name__
        self._std_ratio = _positive(name, "std_ratio", std_ratio)
        self.mean_mean = torch.tensor(_finite(name, "mean_mean", mean_mean))
        self.mean_std = torch.tensor(_positive(name, "mean_std", mean_std, squared=True))
        self.eps = _non_negative(name, "eps", eps)

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        return ("mean_mean", "mean_std")

    def _repr_args(self) -> str:
        return (
            f"std_ratio={self._std_ratio:g}, mean_mean={float(self.mean_mean):g}, "
            f"mean_std={float(self.mean_std):g}"
        )

    def get_parameters(self) -> tuple[Tensor, Tensor]:
        """Return the hyperprior's ``(mean_mean, mean_std)``."""
        return self.mean_mean, self.mean_std

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Element-wise joint log-density given ``(mean_mean, mean_std, mean)``."""
        mean_mean, mean_std, mean = parameters
        variance = (self._std_ratio * mean) ** 2 + self.eps
        mean_variance = mean_std**2 + self.eps
        result = -0.5 * (
            (sample - mean) ** 2 / variance
            + (mean - mean_mean) ** 2 / mean_variance
            + torch.log(variance)
            + torch.log(torch.as_tensor(mean_variance))
        )
        if norm_constants_enabled():
            result = result - LOG_2PI
        return result

    def variational_values(
        self, variational: VariationalDistribution, parameters: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """Means drawn from the hyperprior and ``std = std_ratio * |mean|``."""
        if tuple(variational.distribution_parameters) != ("mean", "log_std"):
            return super().variational_values(variational, parameters)
        mean = torch.empty_like(parameters[0]).normal_(
            float(self.mean_mean), float(self.mean_std)
        )
        return mean, torch.log(self._std_ratio * mean.abs() + self.eps)
