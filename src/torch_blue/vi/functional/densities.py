"""Log-densities and their constants, as pure functions on tensors.

The distributions in :mod:`torch_blue.vi.distributions` score weights and targets
with these, so that each formula is written once.
"""

import math

import torch
from torch import Tensor

from ..utils.use_norm_constants import norm_constants_enabled

__all__ = ["HALF_LOG_2PI", "LOG_2PI", "student_t_log_density"]

#: :math:`\log 2\pi`, the normalisation constant of a standard Normal, twice.
LOG_2PI = math.log(2 * math.pi)
#: :math:`\frac12 \log 2\pi`.
HALF_LOG_2PI = 0.5 * LOG_2PI


def student_t_log_density(
    sample: Tensor, loc: Tensor, log_scale: Tensor, degrees_of_freedom: float
) -> Tensor:
    r"""Element-wise log-density of a Student-t with location, log-scale and :math:`\nu`.

    The normalisation constant is included while
    :func:`~torch_blue.vi.utils.use_norm_constants` is on. The one formula behind
    :class:`~torch_blue.vi.distributions.MeanFieldStudentT`,
    :class:`~torch_blue.vi.distributions.StudentTPrior` and
    :class:`~torch_blue.vi.distributions.StudentTLikelihood`.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([0.0, 1.5])
    >>> want = torch.distributions.StudentT(3.0, 0.5, 2.0).log_prob(x)
    >>> got = student_t_log_density(x, torch.tensor(0.5), torch.tensor(2.0).log(), 3.0)
    >>> torch.allclose(got, want)
    True
    """
    nu = degrees_of_freedom
    z = (sample - loc) * torch.exp(-log_scale)
    result = -0.5 * (nu + 1.0) * torch.log1p(z.square() / nu) - log_scale
    if norm_constants_enabled():
        result = result + (
            math.lgamma((nu + 1.0) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        )
    return result
