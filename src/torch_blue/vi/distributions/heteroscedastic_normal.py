"""The heteroscedastic Normal likelihood: the network predicts mean and noise scale."""

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..functional.densities import HALF_LOG_2PI
from ..utils.errors import ShapeError
from ..utils.use_norm_constants import norm_constants_enabled
from .base import PredictiveDistribution, _non_negative

__all__ = ["HeteroscedasticNormal"]


class HeteroscedasticNormal(PredictiveDistribution):
    r"""Normal likelihood whose mean and scale are both outputs of the network.

    For input-dependent (aleatoric) noise: each sampled output predicts
    :math:`\mathcal N(y \mid \mu(x, w_s), \sigma(x, w_s)^2)`.

    **Layout.** The last dimension of the model output has size :math:`2D` and is
    split in halves: the first :math:`D` entries are the means, the last :math:`D` the
    raw (unconstrained) scales, so an output layer ``VILinear(hidden, 2 * D)`` fits
    directly. Targets have the output's shape with the last dimension halved,
    ``(*, D)``; for a single output (:math:`D = 1`) the trailing dimension of the target
    may be left out (output ``(S, B, 2)``, target ``(B,)`` or ``(B, 1)``).

    **Scale.** :math:`\sigma = \mathrm{softplus}(r) + \mathrm{min\_scale}`. Softplus grows
    linearly rather than exponentially, so a large raw output does not blow up the
    scale (or the gradients); the floor keeps the log-likelihood bounded when the
    network tries to shrink the noise of a few points to zero. It is in the units of the
    targets: standardise them, or lower it for targets with tiny noise.

    The likelihood is finite for one sample (``samples=1``): the noise comes from the
    network, never from the spread of the samples.

    Parameters
    ----------
    min_scale : float, default: 1e-3
        Lower bound of the predicted scale. Must be non-negative and finite.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import KullbackLeiblerLoss, VILinear
    >>> likelihood = HeteroscedasticNormal()
    >>> model = VILinear(3, 2 * 1)  # (mean, raw scale) for one target
    >>> out = model(torch.randn(8, 3), samples=4)
    >>> loss = KullbackLeiblerLoss(likelihood, dataset_size=100)(out, torch.randn(8, 1))
    >>> mean, std = likelihood.predictive_parameters_from_samples(out)
    >>> mean.shape, bool((std > 0).all())
    (torch.Size([8, 1]), True)
    """

    _real_targets = True
    distribution_parameters = ("mean", "std")

    def __init__(self, min_scale: float = 1e-3) -> None:
        name = type(self).__name__
        min_scale = _non_negative(name, "min_scale", min_scale)
        self.min_scale = min_scale

    def _repr_args(self) -> str:
        return f"min_scale={self.min_scale:g}"

    def mean_and_scale(self, output: Tensor) -> tuple[Tensor, Tensor]:
        """Split model outputs ``(..., 2D)`` into means and scales, each ``(..., D)``.

        Parameters
        ----------
        output : Tensor
            Model outputs (with or without the sample dimension); the last dimension
            holds the means, then the raw scales.

        Returns
        -------
        tuple of Tensor
            ``(mean, scale)`` with ``scale = softplus(raw) + min_scale``.
        """
        if output.dim() == 0 or output.shape[-1] % 2:
            raise ShapeError(
                f"{type(self).__name__}: the last dimension of the model output must "
                f"hold (mean, raw scale) halves and be even, got shape "
                f"{tuple(output.shape)}"
            )
        mean, raw_scale = output.chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        # softplus underflows to 0 below about -104 (float32); with min_scale=0 a
        # zero scale would make the log-density 0/0 = NaN.
        return mean, scale.clamp_min(torch.finfo(scale.dtype).tiny)

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor, Tensor]) -> Tensor:
        """Element-wise Normal log-density of ``sample`` given ``(mean, std)``."""
        mean, std = parameters
        result = -0.5 * ((sample - mean) / std).square() - torch.log(std)
        if norm_constants_enabled():
            result = result - HALF_LOG_2PI
        return result

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean and standard deviation of the mixture of the S sampled Normals.

        With per-sample means :math:`\mu_s` and scales :math:`\sigma_s`, the mixture
        :math:`\frac1S \sum_s \mathcal N(\mu_s, \sigma_s^2)` has mean
        :math:`\bar\mu = \mathrm{mean}_s\, \mu_s` and variance
        :math:`\mathrm{mean}_s\, \sigma_s^2` (aleatoric) :math:`+ \mathrm{Var}_s\,
        \mu_s` (epistemic, population variance). Returns ``(mean, std)`` of shape
        ``(*, D)``; finite for one sample.
        """
        mean, scale = self.mean_and_scale(samples)
        variance = scale.square().mean(dim=0) + mean.var(dim=0, unbiased=False)
        return mean.mean(dim=0), variance.sqrt()

    def log_prob_from_parameters(
        self, reference: Tensor, parameters: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Log-density of ``reference`` under the moment-matched Normal ``(mean, std)``.

        A target without the trailing dimension of a single output (see the class
        docstring) is matched to parameters of shape ``(*, 1)``.
        """
        return self.log_prob(reference, _drop_single_feature(reference, parameters))

    def _check(self, reference: Tensor, samples: Tensor) -> None:
        name = type(self).__name__
        self._check_target(reference)
        if samples.dim() < 2 or samples.shape[-1] % 2:
            raise ShapeError(
                f"{name}: the model output {tuple(samples.shape)} must be (S, ..., 2*D): "
                "a sample dimension and a last dimension holding (mean, raw scale) "
                "halves"
            )
        expected = (*samples.shape[1:-1], samples.shape[-1] // 2)
        if reference.shape != expected and not (
            expected[-1] == 1 and reference.shape == expected[:-1]
        ):
            raise ShapeError(
                f"{name}: target shape {tuple(reference.shape)} does not match the "
                f"model output {tuple(samples.shape)}; expected {expected} (output "
                "without its sample dimension, last dimension halved)"
            )

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        mean, scale = self.mean_and_scale(samples)
        if mean.dim() == reference.dim() + 2:  # single output given without its dim
            mean, scale = mean.squeeze(-1), scale.squeeze(-1)
        return self.log_prob(reference.unsqueeze(0), (mean, scale))


def _drop_single_feature(
    reference: Tensor, parameters: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """Squeeze parameters ``(*, 1)`` for targets ``(*)``, instead of broadcasting."""
    return tuple(
        p.squeeze(-1) if p.dim() == reference.dim() + 1 and p.shape[-1] == 1 else p
        for p in parameters
    )
