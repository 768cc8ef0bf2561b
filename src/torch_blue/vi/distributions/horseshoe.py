r"""The horseshoe prior (Carvalho et al., 2010) with a fixed global scale.

:math:`w \sim \mathcal N(0, \tau^2\lambda^2)` with a local scale
:math:`\lambda \sim C^+(0, 1)` per weight integrated out has the marginal density

.. math::
    p(w) = \frac{1}{\tau\sqrt{2\pi^3}}\, e^{z} E_1(z),\qquad z = \frac{w^2}{2\tau^2},

where :math:`E_1` is the exponential integral. (Carvalho et al. give the bounds
:math:`\frac K2\log(1 + 4/z') < \tau p(w) < K\log(1 + 2/z')` with
:math:`z' = w^2/\tau^2`, :math:`K = (2\pi^3)^{-1/2}`; the expression above is the
exact value of the scale-mixture integral.) :math:`e^z E_1(z)` is evaluated with its
power series for :math:`z \le 1` and a continued fraction beyond, both with a fixed
number of terms (relative error below :math:`10^{-9}` in float64), so it is
differentiable and runs under ``torch.vmap``.
"""

import math

import torch
from torch import Tensor

from ..utils.use_norm_constants import norm_constants_enabled
from .base import Prior, _positive

__all__ = ["HorseshoePrior"]

_EULER_GAMMA = 0.5772156649015329
_LOG_K = -0.5 * math.log(2 * math.pi**3)
_SWITCH = 1.0
_SERIES_TERMS = 20
_SERIES = tuple(
    (-1) ** (k + 1) / (k * math.factorial(k)) for k in range(1, _SERIES_TERMS + 1)
)
_FRACTION_DEPTH = 40


def _log_scaled_exp1_value(z: Tensor) -> Tensor:
    tiny = torch.finfo(z.dtype).tiny
    # Each branch sees only inputs in its own range (no inf/nan in the branch not taken).
    small = z.clamp(min=tiny, max=_SWITCH)
    large = z.clamp(min=_SWITCH)
    # E_1(z) = -gamma - log z + sum_k c_k z^k with c_k = (-1)^(k+1) / (k k!), by Horner's
    # rule (no powers of z that underflow).
    series = torch.full_like(small, _SERIES[-1])
    for coefficient in reversed(_SERIES[:-1]):
        series = torch.addcmul(torch.full_like(small, coefficient), small, series)
    series = series * small
    log_small = small + torch.log(-_EULER_GAMMA - torch.log(small) + series)
    # e^z E_1(z) = 1 / (z + 1 - 1^2 / (z + 3 - 2^2 / (z + 5 - ...))), evaluated backwards.
    tail = torch.zeros_like(large)
    for k in range(_FRACTION_DEPTH, 0, -1):
        tail = k * k / (large + (2 * k + 1) - tail)
    log_large = -torch.log(large + 1 - tail)
    return torch.where(z <= _SWITCH, log_small, log_large)


class _LogScaledExp1(torch.autograd.Function):
    """The value by series and continued fraction, the derivative in closed form.

    Recording the ~60 element-wise steps for autograd would cost more than the rest of
    a training step; :math:`f'(z) = 1 - 1/(z e^z E_1(z))` needs none of them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        return _log_scaled_exp1_value(z)

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        z, value = ctx.saved_tensors
        z = z.clamp(min=torch.finfo(z.dtype).tiny)
        return grad * (1 - torch.exp(-torch.log(z) - value))


def log_scaled_exp1(z: Tensor) -> Tensor:
    r""":math:`\log(e^z E_1(z))` for :math:`z \ge 0`, element-wise and differentiable.

    Examples
    --------
    >>> import torch
    >>> log_scaled_exp1(torch.tensor([0.5, 1.0, 10.0], dtype=torch.float64)).exp()
    tensor([0.9229, 0.5963, 0.0916], dtype=torch.float64)
    """
    return _LogScaledExp1.apply(z)


class HorseshoePrior(Prior):
    r"""Horseshoe prior per weight, its local scales integrated out.

    .. math::
        w \mid \lambda \sim \mathcal N(0, \tau^2\lambda^2),\qquad
        \lambda \sim C^+(0, 1)

    with a fixed global scale :math:`\tau` (``scale``). Its density has an infinite
    (log) spike at zero and Cauchy-like :math:`1/w^2` tails: most weights are shrunk
    hard towards zero while a few may stay large (Carvalho et al., 2010; used for
    Bayesian neural networks by Louizos et al., 2017 and Ghosh et al., 2019). The
    marginal density is evaluated exactly (see
    :mod:`torch_blue.vi.distributions.horseshoe`); there is no closed-form KL
    divergence, so the losses estimate it by Monte Carlo. This is the horseshoe with
    the scales integrated out and :math:`\tau` fixed, not the hierarchical version
    with variational local and global scales.

    Hyperparameters are ``("scale",)``; ``rescale_prior=True`` multiplies
    :math:`\tau` by :math:`1/\sqrt{3\,\mathrm{fan}_\mathrm{in}}`. Without normalisation
    constants :math:`\log K = -\frac12\log(2\pi^3)` is dropped.

    Parameters
    ----------
    scale : float, default: 1.0
        Global scale :math:`\tau`; smaller values shrink harder. Must be positive.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> prior = HorseshoePrior(scale=0.1)
    >>> prior
    HorseshoePrior(scale=0.1)
    >>> VILinear(3, 2, prior=prior)(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    """

    distribution_parameters = ("scale",)

    def __init__(self, scale: float = 1.0) -> None:
        scale = _positive(type(self).__name__, "scale", scale, squared=True)
        self.scale = torch.tensor(scale)

    def _repr_args(self) -> str:
        return f"scale={float(self.scale):g}"

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor]) -> Tensor:
        """Element-wise marginal horseshoe log-density given ``(scale,)``."""
        (scale,) = (torch.as_tensor(p) for p in parameters)
        z = 0.5 * (sample / scale).square()
        result = log_scaled_exp1(z) - torch.log(scale)
        if norm_constants_enabled():
            result = result + _LOG_K
        return result
