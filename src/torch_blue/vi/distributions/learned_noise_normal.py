"""The Normal likelihood with a learned, homoscedastic noise scale."""

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..functional.densities import HALF_LOG_2PI
from ..utils.checks import check_int
from ..utils.errors import ShapeError
from ..utils.use_norm_constants import norm_constants_enabled
from .base import PredictiveDistribution, _positive

__all__ = ["LearnedNoiseNormal"]


class LearnedNoiseNormal(PredictiveDistribution, nn.Module):
    r"""Normal likelihood around each sampled output, with a learned noise scale.

    :math:`p(y \mid f(x, w_s)) = \mathcal N(y \mid f(x, w_s), \sigma^2)`: like
    :class:`~torch_blue.vi.distributions.MeanFieldNormal` as predictive, but the noise
    :math:`\sigma` (the same for every data point) is fitted with the model instead of
    fixed in advance. It is a point estimate (maximum likelihood under the ELBO, no
    prior), stored as the ``nn.Parameter`` :attr:`log_std` so that it stays positive.

    **Reaching the optimizer.** The distribution is an ``nn.Module``. A loss stores it
    as an attribute, so :class:`~torch_blue.vi.KullbackLeiblerLoss` and
    :class:`~torch_blue.vi.AnalyticalKullbackLeiblerLoss` register it as a submodule:
    ``loss_fn.parameters()`` yields :attr:`log_std`, ``loss_fn.to(device)`` moves it and
    ``loss_fn.state_dict()`` saves it. Pass it to the optimizer with the model's
    parameters, ``Adam([*model.parameters(), *loss_fn.parameters()])`` (or
    ``likelihood.parameters()``); an optimizer given only ``model.parameters()`` leaves
    the noise at its initial value.

    Works with one sample (``samples=1``): the noise never comes from the spread of the
    samples.

    Parameters
    ----------
    std : float, default: 1.0
        Initial noise standard deviation. Must be positive.
    num_outputs : int, optional
        One noise scale per output feature (the last dimension of the model output,
        which must then have this size); one shared scale if ``None``.
    device, dtype : optional
        Of the parameter, as for ``torch.nn`` layers.

    Examples
    --------
    The noise scale converges to the true noise of synthetic data (0.3 here):

    >>> import torch
    >>> from torch_blue.vi import KullbackLeiblerLoss, VILinear
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(500, 1)
    >>> y = 2 * x - 1 + 0.3 * torch.randn(500, 1)
    >>> model, likelihood = VILinear(1, 1), LearnedNoiseNormal()
    >>> loss_fn = KullbackLeiblerLoss(likelihood, dataset_size=500)
    >>> optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.05)
    >>> for _ in range(300):
    ...     optimizer.zero_grad()
    ...     loss_fn(model(x, samples=4), y).backward()
    ...     optimizer.step()
    >>> round(likelihood.std.item(), 1)
    0.3
    """

    _real_targets = True
    distribution_parameters = ("mean", "std")

    def __init__(
        self,
        std: float = 1.0,
        num_outputs: Optional[int] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        name = type(self).__name__
        log_std = math.log(_positive(name, "std", std, squared=True))
        if num_outputs is not None:
            num_outputs = check_int(name, "num_outputs", num_outputs, note=" or None")
        super().__init__()
        self.num_outputs = num_outputs
        shape = () if num_outputs is None else (num_outputs,)
        self.log_std = nn.Parameter(torch.full(shape, log_std, device=device, dtype=dtype))

    def _repr_args(self) -> str:
        if self.num_outputs is not None:
            return f"num_outputs={self.num_outputs}"
        return f"std={self.std.item():g}"

    @property
    def std(self) -> Tensor:
        """The current noise standard deviation, ``exp(log_std)``."""
        return self.log_std.exp()

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Normal log-density of ``sample`` given ``(mean, std)``."""
        mean, std = parameters
        return self._log_density(sample, mean, torch.log(std))

    @staticmethod
    def _log_density(sample: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
        result = -0.5 * ((sample - mean) * torch.exp(-log_std)).square() - log_std
        if norm_constants_enabled():
            result = result - HALF_LOG_2PI
        return result

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        r"""Moment-matched predictive mean and standard deviation.

        :math:`\sqrt{\mathrm{Var}_s[f_s] + \sigma^2}`: the spread of the samples
        (epistemic, population variance) plus the learned noise (aleatoric). Finite
        for one sample.
        """
        spread = samples.var(dim=0, unbiased=False)
        std = torch.sqrt(spread + torch.exp(2 * self.log_std.to(samples)))
        return samples.mean(dim=0), std

    def _check(self, reference: Tensor, samples: Tensor) -> None:
        super()._check(reference, samples)
        name = type(self).__name__
        if self.num_outputs is not None and (
            samples.dim() < 2 or samples.shape[-1] != self.num_outputs
        ):
            raise ShapeError(
                f"{name}: the model output {tuple(samples.shape)} must have "
                f"num_outputs={self.num_outputs} features in its last dimension"
            )

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        return self._log_density(reference.unsqueeze(0), samples, self.log_std.to(samples))
