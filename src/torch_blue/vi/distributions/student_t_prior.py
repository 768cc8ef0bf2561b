"""The Student-t prior: heavy tails for the weights."""

import math
import warnings
from typing import Optional

import torch
from torch import Tensor

from .base import Prior, _finite, _positive
from .student_t import student_t_log_density

__all__ = ["StudentTPrior"]


class StudentTPrior(Prior):
    r"""Independent Student-t prior per weight.

    .. math::
        \log p(w) = \log\Gamma\!\big(\tfrac{\nu+1}2\big) - \log\Gamma\!\big(\tfrac\nu2\big)
        - \tfrac12\log(\nu\pi) - \log s
        - \tfrac{\nu+1}2 \log\!\Big(1 + \frac{(w - m)^2}{\nu s^2}\Big)

    A Normal whose precision has a Gamma prior, integrated out independently per
    weight: heavier tails than a Normal (fewer, larger weights are cheap). Named
    apart from :class:`~torch_blue.vi.distributions.StudentT`, the alias of the
    variational :class:`~torch_blue.vi.distributions.MeanFieldStudentT`. There is no
    closed-form KL divergence; both losses estimate it by Monte Carlo.

    Hyperparameters are ``("loc", "log_scale")``; the degrees of freedom are fixed.
    With ``rescale_prior=True`` location and scale are scaled by
    :math:`1/\sqrt{3\,\mathrm{fan}_\mathrm{in}}`, the degrees of freedom stay.
    Without normalisation constants the terms that depend on them alone are dropped
    (:math:`-\log s` stays), as for :class:`~torch_blue.vi.distributions.MeanFieldStudentT`.

    Parameters
    ----------
    degrees_of_freedom : float, default: 3.0
        Degrees of freedom :math:`\nu`. Must be positive. Named as in
        :class:`MeanFieldStudentT` and :class:`StudentTLikelihood`; the keyword
        ``df`` of earlier releases still works and warns.
    loc : float, default: 0.0
        Location :math:`m`. Must be finite.
    scale : float, default: 1.0
        Scale :math:`s`. Must be positive.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> prior = StudentTPrior(degrees_of_freedom=4.0, scale=0.5)
    >>> prior
    StudentTPrior(degrees_of_freedom=4, loc=0, scale=0.5)
    >>> VILinear(3, 2, prior=prior)(torch.randn(4, 3), samples=5).shape
    torch.Size([5, 4, 2])
    """

    distribution_parameters = ("loc", "log_scale")

    def __init__(
        self,
        degrees_of_freedom: float = 3.0,
        loc: float = 0.0,
        scale: float = 1.0,
        *,
        df: Optional[float] = None,
    ) -> None:
        name = type(self).__name__
        if df is not None:
            warnings.warn(
                f"{name}: the keyword df is deprecated; use degrees_of_freedom",
                DeprecationWarning,
                stacklevel=2,
            )
            degrees_of_freedom = df
        self.degrees_of_freedom = _positive(name, "degrees_of_freedom", degrees_of_freedom)
        self.loc = torch.tensor(_finite(name, "loc", loc))
        scale = _positive(name, "scale", scale, squared=True)
        self.log_scale = torch.tensor(math.log(scale))

    def _repr_args(self) -> str:
        return (
            f"degrees_of_freedom={self.degrees_of_freedom:g}, loc={float(self.loc):g}, "
            f"scale={math.exp(float(self.log_scale)):g}"
        )

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Student-t log-density given ``(loc, log_scale)``."""
        loc, log_scale = (torch.as_tensor(p) for p in parameters)
        return student_t_log_density(sample, loc, log_scale, self.degrees_of_freedom)

    @property
    def df(self) -> float:
        """The degrees of freedom (the name of earlier releases)."""
        return self.degrees_of_freedom
