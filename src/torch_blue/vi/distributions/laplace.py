"""The Laplace prior: an L1 penalty on the weights."""

import math

import torch
from torch import Tensor

from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, _finite, _positive

__all__ = ["Laplace", "LaplacePrior"]

_LOG_2 = math.log(2.0)


class LaplacePrior(Prior):
    r"""Independent Laplace prior per weight.

    .. math::
        \log p(w) = -\log(2b) - \frac{|w - m|}{b}

    with location :math:`m` (``loc``) and scale :math:`b` (``scale``); its KL term
    acts like L1 weight decay towards ``loc``. With a
    :class:`~torch_blue.vi.distributions.MeanFieldNormal` variational distribution
    the KL divergence has a closed form (the expected :math:`|w - m|` is the mean of
    a folded Normal), used by :class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss`
    and by the local-reparameterisation and Flipout estimators.

    Hyperparameters are ``("loc", "log_scale")``. With ``rescale_prior=True`` both
    are scaled by :math:`1/\sqrt{3\,\mathrm{fan}_\mathrm{in}}` (a zero location stays zero;
    :meth:`~torch_blue.vi.distributions.Prior.kaiming_rescale`). Without
    normalisation constants the :math:`-\log 2` is dropped (:math:`-\log b` stays).

    Parameters
    ----------
    loc : float, default: 0.0
        Location :math:`m`. Must be finite.
    scale : float, default: 1.0
        Scale :math:`b` (the standard deviation is :math:`\sqrt 2\, b`). Must be
        positive.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> prior = LaplacePrior(scale=0.1)
    >>> prior
    LaplacePrior(loc=0, scale=0.1)
    >>> VILinear(3, 2, prior=prior)(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    """

    distribution_parameters = ("loc", "log_scale")

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        name = type(self).__name__
        self.loc = torch.tensor(_finite(name, "loc", loc))
        self.log_scale = torch.tensor(math.log(_positive(name, "scale", scale)))

    def _repr_args(self) -> str:
        return f"loc={float(self.loc):g}, scale={math.exp(float(self.log_scale)):g}"

    @property
    def scale(self) -> Tensor:
        """The scale :math:`b`, ``exp(log_scale)``."""
        return self.log_scale.exp()

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Laplace log-density given ``(loc, log_scale)``."""
        loc, log_scale = (torch.as_tensor(p) for p in parameters)
        result = -(sample - loc).abs() * torch.exp(-log_scale) - log_scale
        if norm_constants_enabled():
            result = result - _LOG_2
        return result


#: Deprecated name of :class:`LaplacePrior` (released before priors took the suffix).
Laplace = LaplacePrior
