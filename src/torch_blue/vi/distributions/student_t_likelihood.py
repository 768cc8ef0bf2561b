"""The Student-t likelihood for robust regression."""

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..utils.checks import check_bool
from .base import PredictiveDistribution, _positive
from .student_t import student_t_log_density

__all__ = ["StudentTLikelihood"]


class StudentTLikelihood(PredictiveDistribution, nn.Module):
    r"""Student-t likelihood around each sampled output, for robust regression.

    :math:`p(y \mid f(x, w_s)) = t_\nu(y \mid f(x, w_s), s)`, with location the sampled
    output, scale :math:`s` and fixed degrees of freedom :math:`\nu`. Its tails fall
    polynomially, so an outlier costs :math:`O(\log r)` in its residual :math:`r`
    instead of the Normal's :math:`O(r^2)`, and a few gross errors barely move the fit.
    Small :math:`\nu` is more robust; :math:`\nu \to \infty` gives the Normal.

    (:class:`~torch_blue.vi.distributions.MeanFieldStudentT` is the Student-t as
    variational distribution over weights; this class is the likelihood of targets.)

    **Scale.** Fixed by default; with ``learn_scale=True`` it is fitted as a point
    estimate. Either way it is stored as :attr:`log_scale` on this ``nn.Module``: an
    ``nn.Parameter`` when learned, a (non-persistent) buffer when fixed. A loss
    registers the distribution as a submodule, so a learned scale reaches the optimizer
    through ``Adam([*model.parameters(), *loss_fn.parameters()])`` and
    ``loss_fn.to(device)`` moves it. :math:`\nu` is never learned (its likelihood
    surface is flat and it would drift to the Normal).

    Targets are floating point with the output's shape without the sample dimension.
    Works with one sample (``samples=1``).

    Parameters
    ----------
    scale : float, default: 1.0
        Scale :math:`s` (the initial value when learned). Must be positive.
    degrees_of_freedom : float, default: 4.0
        :math:`\nu`. Must be positive.
    learn_scale : bool, default: False
        Fit the scale together with the model.
    device, dtype : optional
        Of :attr:`log_scale`, as for ``torch.nn`` layers.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import KullbackLeiblerLoss, VILinear
    >>> likelihood = StudentTLikelihood(scale=0.5, degrees_of_freedom=3)
    >>> model = VILinear(2, 1)
    >>> loss_fn = KullbackLeiblerLoss(likelihood, dataset_size=100)
    >>> loss = loss_fn(model(torch.randn(8, 2), samples=4), torch.randn(8, 1))
    >>> likelihood
    StudentTLikelihood(scale=0.5, degrees_of_freedom=3, learn_scale=False)
    """

    _real_targets = True
    distribution_parameters = ("loc", "scale")

    def __init__(
        self,
        scale: float = 1.0,
        degrees_of_freedom: float = 4.0,
        learn_scale: bool = False,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        name = type(self).__name__
        log_scale = math.log(_positive(name, "scale", scale, squared=True))
        nu = _positive(name, "degrees_of_freedom", degrees_of_freedom)
        check_bool(name, "learn_scale", learn_scale)
        super().__init__()
        self.degrees_of_freedom = nu
        self.learn_scale = learn_scale
        value = torch.tensor(log_scale, device=device, dtype=dtype)
        if learn_scale:
            self.log_scale = nn.Parameter(value)
        else:
            # A fixed hyperparameter: moves with .to(), but is no checkpoint state.
            self.register_buffer("log_scale", value, persistent=False)

    def _repr_args(self) -> str:
        return (
            f"scale={self.scale.item():g}, degrees_of_freedom={self.degrees_of_freedom:g}, "
            f"learn_scale={self.learn_scale}"
        )

    @property
    def scale(self) -> Tensor:
        """The (current) scale, ``exp(log_scale)``."""
        return self.log_scale.exp()

    def _log_density(self, sample: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
        return student_t_log_density(sample, loc, log_scale, self.degrees_of_freedom)

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Student-t log-density of ``sample`` given ``(loc, scale)``."""
        loc, scale = parameters
        return self._log_density(sample, loc, torch.log(scale))

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        r"""Location and scale of a Student-t summarising the samples.

        ``loc`` is the sample mean; ``scale`` is :math:`\sqrt{s^2 +
        \mathrm{Var}_s[f_s]}`, the scale widened by the spread of the samples
        (population variance), with the same :math:`\nu`. For :math:`\nu > 2` the
        predictive variance is :math:`\frac{\nu}{\nu - 2}` times its square. Finite
        for one sample and for every :math:`\nu`.
        """
        spread = samples.var(dim=0, unbiased=False)
        scale = torch.sqrt(spread + torch.exp(2 * self.log_scale.to(samples)))
        return samples.mean(dim=0), scale

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        return self._log_density(
            reference.unsqueeze(0), samples, self.log_scale.to(samples)
        )
