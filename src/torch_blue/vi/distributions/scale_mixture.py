"""The scale-mixture Normal prior of "Bayes by Backprop" (Blundell et al., 2015)."""

import math

import torch
from torch import Tensor

from ..functional.densities import LOG_2PI
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, _positive

__all__ = ["ScaleMixtureNormal", "ScaleMixtureNormalPrior"]


def _probability(owner: str, name: str, value: float) -> float:
    if isinstance(value, Tensor):
        value = float(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"{owner}: {name} must be in the open interval (0, 1), got {value!r}"
        )
    return float(value)


class ScaleMixtureNormalPrior(Prior):
    r"""Zero-mean mixture of a wide and a narrow Normal, per weight.

    .. math::
        p(w) = \pi\,\mathcal N(w; 0, \sigma_1^2) + (1 - \pi)\,\mathcal N(w; 0, \sigma_2^2)

    (Blundell et al., 2015). The narrow component (:math:`\sigma_2 \ll 1`) pulls
    many weights close to zero, the wide one (:math:`\sigma_1`) leaves room for the
    rest: a heavier-tailed, spikier prior than a single Normal. The log-density is
    evaluated stably with ``logaddexp`` (a two-term ``logsumexp``). There is no
    closed-form KL divergence; both losses estimate it by Monte Carlo.

    The defaults are the middle of the grid the paper searched
    (:math:`-\log\sigma_1 \in \{0, 1, 2\}`, :math:`-\log\sigma_2 \in \{6, 7, 8\}`,
    :math:`\pi \in \{1/4, 1/2, 3/4\}`): :math:`\pi = 1/2`, :math:`\sigma_1 = e^0 = 1`,
    :math:`\sigma_2 = e^{-6} \approx 0.0025`.

    Hyperparameters are ``("pi", "log_sigma_1", "log_sigma_2")``. With
    ``rescale_prior=True`` both scales are multiplied by :math:`1/\sqrt{3\,
    \mathrm{fan}_\mathrm{in}}` (:meth:`~torch_blue.vi.distributions.Prior.kaiming_rescale`);
    the mixing weight stays. Without normalisation constants
    (:func:`~torch_blue.vi.utils.use_norm_constants`) the shared
    :math:`-\frac12\log 2\pi` is dropped.

    Parameters
    ----------
    pi : float, default: 0.5
        Weight :math:`\pi` of the first (wide) component, in the open interval (0, 1).
    sigma_1 : float, default: 1.0
        Standard deviation of the first component. Must be positive.
    sigma_2 : float, default: exp(-6)
        Standard deviation of the second component. Must be positive.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> prior = ScaleMixtureNormalPrior(pi=0.25, sigma_1=1.0, sigma_2=0.001)
    >>> prior
    ScaleMixtureNormalPrior(pi=0.25, sigma_1=1, sigma_2=0.001)
    >>> VILinear(3, 2, prior=prior)(torch.randn(4, 3), samples=5).log_probs.shape
    torch.Size([5, 2])
    """

    distribution_parameters = ("pi", "log_sigma_1", "log_sigma_2")

    def __init__(
        self, pi: float = 0.5, sigma_1: float = 1.0, sigma_2: float = math.exp(-6.0)
    ) -> None:
        name = type(self).__name__
        self.pi = torch.tensor(_probability(name, "pi", pi))
        sigma_1 = _positive(name, "sigma_1", sigma_1, squared=True)
        sigma_2 = _positive(name, "sigma_2", sigma_2, squared=True)
        self.log_sigma_1 = torch.tensor(math.log(sigma_1))
        self.log_sigma_2 = torch.tensor(math.log(sigma_2))

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        return ("log_sigma_1", "log_sigma_2")

    def _repr_args(self) -> str:
        return (
            f"pi={float(self.pi):g}, sigma_1={math.exp(float(self.log_sigma_1)):g}, "
            f"sigma_2={math.exp(float(self.log_sigma_2)):g}"
        )

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Element-wise mixture log-density given ``(pi, log_sigma_1, log_sigma_2)``."""
        pi, log_sigma_1, log_sigma_2 = (torch.as_tensor(p) for p in parameters)
        wide = (
            torch.log(pi) - log_sigma_1 - 0.5 * (sample * torch.exp(-log_sigma_1)).square()
        )
        narrow = (
            torch.log1p(-pi)
            - log_sigma_2
            - 0.5 * (sample * torch.exp(-log_sigma_2)).square()
        )
        result = torch.logaddexp(wide, narrow)
        if norm_constants_enabled():
            result = result - 0.5 * LOG_2PI
        return result


#: Deprecated name of :class:`ScaleMixtureNormalPrior`.
ScaleMixtureNormal = ScaleMixtureNormalPrior
