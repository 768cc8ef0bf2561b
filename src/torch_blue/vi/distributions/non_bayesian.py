"""Point estimates: the distribution that is always its mean."""

from typing import Optional

from torch import Tensor

from .base import PredictiveDistribution, VariationalDistribution
from .uniform import UniformPrior

__all__ = ["UniformPrior", "NonBayesian"]


class NonBayesian(UniformPrior, VariationalDistribution, PredictiveDistribution):
    """A point estimate: the "distribution" that always returns its ``mean``.

    As variational distribution it turns a weight into an ordinary parameter
    (``_weight_mean``) with log-density 0, e.g. to keep a layer deterministic. As
    predictive distribution it reproduces a plain loss (``loss_type`` "MSE"/"L2" or
    "MAE"/"L1") on each sample.

    Parameters
    ----------
    loss_type : {"MSE", "L2", "MAE", "L1"}, optional
        Needed only for the predictive role.

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import VILinear
    >>> layer = VILinear(3, 2, variational_distribution=NonBayesian())
    >>> out = layer(torch.ones(1, 3), samples=2)
    >>> torch.equal(out[0], out[1])
    True
    """

    _default_variational_parameters = (0.0,)

    def __init__(self, loss_type: Optional[str] = None) -> None:
        if loss_type not in (None, "MSE", "L2", "MAE", "L1"):
            raise ValueError(
                f"NonBayesian: loss_type must be None, 'MSE', 'L2', 'MAE' or 'L1', got "
                f"{loss_type!r}"
            )
        self.loss_type = loss_type

    def _repr_args(self) -> str:
        return "" if self.loss_type is None else f"loss_type={self.loss_type!r}"

    def sample(self, parameters: tuple[Tensor]) -> Tensor:
        """Return the mean itself."""
        return parameters[0]

    def sample_and_log_prob(self, parameters: tuple[Tensor]) -> tuple[Tensor, Tensor]:
        """Return the mean and a zero log-density."""
        return parameters[0], parameters[0].new_zeros(())

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor]:
        """The mean over samples."""
        return (samples.mean(dim=0),)

    def _loss(self, prediction: Tensor, reference: Tensor) -> Tensor:
        if self.loss_type is None:
            raise ValueError(
                "NonBayesian: set loss_type ('MSE' or 'MAE') to use it as predictive "
                "distribution"
            )
        diff = prediction - reference
        return diff.square() if self.loss_type in ("MSE", "L2") else diff.abs()

    def log_prob_from_parameters(
        self, reference: Tensor, parameters: tuple[Tensor]
    ) -> Tensor:
        """Negative element-wise loss between the mean prediction and ``reference``."""
        prediction = parameters[0] if isinstance(parameters, tuple) else parameters
        return -self._loss(prediction, reference)

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        return -self._loss(samples, reference.unsqueeze(0))

    def log_prob_from_samples(self, reference: Tensor, samples: Tensor) -> Tensor:
        """Negative loss of the sample mean, summed per data point."""
        value = self.log_prob_from_parameters(
            reference, self.predictive_parameters_from_samples(samples)
        )
        return value.flatten(start_dim=1).sum(-1) if value.dim() > 1 else value
