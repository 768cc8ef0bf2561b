"""The flat prior."""

from typing import Optional

import torch
from torch import Tensor

from .base import Prior

__all__ = ["UniformPrior"]


class UniformPrior(Prior):
    r"""Improper flat prior: :math:`\log p(w) = 0` for every weight.

    With it the KL term reduces to the negative entropy of the variational
    distribution. It has no hyperparameters and is not rescaled.

    Examples
    --------
    >>> import torch
    >>> UniformPrior().log_prob(torch.ones(3), (None,))
    tensor([0., 0., 0.])
    """

    distribution_parameters = ("mean",)
    mean = None

    @property
    def _scaling_parameters(self) -> tuple[str, ...]:
        return ()

    def log_prob(self, sample: Tensor, parameters: tuple[Optional[Tensor], ...]) -> Tensor:
        """Zeros of the sample's shape."""
        return torch.zeros_like(sample)

    def prior_log_prob_sum(
        self, sample: Tensor, hyperparameters: tuple[Tensor, ...] = tuple()
    ) -> Tensor:
        """A zero (0-d) on the sample's device."""
        return sample.new_zeros(())
