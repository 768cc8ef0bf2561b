r"""The log-uniform sparsity prior of sparse variational dropout (Molchanov et al., 2017).

:math:`p(|w|) \propto 1/|w|` is improper, so the KL divergence of a variational
distribution from it is only defined up to an additive constant. With a
:class:`~torch_blue.vi.distributions.MeanFieldNormal` variational distribution
:math:`\mathcal N(\mu, \sigma^2)` it depends on the weight only through
:math:`\alpha = \sigma^2/\mu^2`, and Molchanov et al. fit

.. math::
    -\mathrm{KL} \approx k_1\,\mathrm{sigmoid}(k_2 + k_3\log\alpha)
    - \tfrac12\log(1 + 1/\alpha) - k_1,\qquad
    k_1 = 0.63576,\ k_2 = 1.87320,\ k_3 = 1.48695,

with the constant chosen so that the KL vanishes as :math:`\alpha \to \infty` (a
weight that is pure noise, i.e. pruned). This closed form is registered for the pair
``(LogUniformPrior, MeanFieldNormal)`` and is the intended path: train with
:class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss` (or the local
reparameterisation estimator). Weights with :math:`\log\alpha > 3` are usually pruned.
"""

import math

import torch
from torch import Tensor

from ..functional.densities import HALF_LOG_2PI
from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior

__all__ = ["LogUniformPrior"]

_EULER_GAMMA = 0.5772156649015329
# The additive constant of the improper density, chosen so that the Monte Carlo
# estimate E_q[log q - log p] of a Normal q equals the exact KL that Molchanov et al.'s
# formula approximates (zero for alpha -> infinity): with constants, 1/2 log(2 pi e)
# (the Normal's entropy constant) plus (gamma + log 2) / 2 (minus E log|eps|).
_CONSTANT_WITHOUT_2PI = 0.5 * (1.0 + _EULER_GAMMA + math.log(2.0))


class LogUniformPrior(Prior):
    r"""Improper log-uniform prior :math:`p(|w|) \propto 1/|w|`: sparsity.

    Scale-invariant, so it has no hyperparameters and ``rescale_prior`` leaves it
    unchanged. Pair it with a :class:`~torch_blue.vi.distributions.MeanFieldNormal`
    variational distribution and the closed-form KL of Molchanov et al. (2017) (see
    :mod:`torch_blue.vi.distributions.log_uniform`), used automatically by
    :class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss`.

    The Monte Carlo path needs a log-density: :meth:`log_prob` returns
    :math:`-\log|w| - C`, where the constant :math:`C = \frac12(\log 2\pi + 1 +
    \gamma + \log 2) \approx 2.054` (:math:`\gamma` the Euler-Mascheroni constant)
    makes :math:`\mathbb E_q[\log q - \log p]` for a Normal :math:`q` equal the exact
    KL divergence that the closed form approximates (to within 0.01 nats per weight).
    So the two losses agree, but the Monte Carlo estimate is much noisier (and
    :math:`\log p` is infinite at exactly :math:`w = 0`). Without normalisation
    constants :math:`\frac12\log 2\pi` is dropped from :math:`C`, as the Normal
    drops it from :math:`\log q`, so the KL estimate does not change.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import AnalyticalKullbackLeiblerLoss, VILinear
    >>> from torch_blue.vi.distributions import Categorical
    >>> layer = VILinear(3, 2, prior=LogUniformPrior(), return_log_probs=False)
    >>> loss_fn = AnalyticalKullbackLeiblerLoss(layer, Categorical(), dataset_size=100)
    >>> loss = loss_fn(layer(torch.randn(4, 3), samples=2), torch.tensor([0, 1, 1, 0]))
    >>> loss.backward()
    """

    distribution_parameters = ()

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        return ()

    @staticmethod
    def constant() -> float:
        r"""The constant :math:`C` of :math:`\log p(w) = -\log|w| - C` (see the class)."""
        if norm_constants_enabled():
            return _CONSTANT_WITHOUT_2PI + HALF_LOG_2PI
        return _CONSTANT_WITHOUT_2PI

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, ...] = ()) -> Tensor:
        r"""Element-wise :math:`-\log|w| - C` (the parameters are ignored)."""
        return -torch.log(sample.abs()) - self.constant()
