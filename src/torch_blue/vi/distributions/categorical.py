"""The categorical predictive distribution for classification."""

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..utils.errors import ShapeError
from .base import PredictiveDistribution, _check_probabilities, _non_negative

__all__ = ["Categorical"]


class Categorical(PredictiveDistribution):
    """Categorical likelihood over the last dimension of the model output.

    The predictive twin of :class:`torch.nn.CrossEntropyLoss`: targets are integer
    class indices of shape ``output.shape[1:-1]`` (e.g. ``(B,)`` for outputs
    ``(S, B, C)``).

    Parameters
    ----------
    input_type : {"logits", "probs"}, default: "logits"
        Whether the model outputs unnormalised log-probabilities or probabilities
        (non-negative; renormalised over the class dimension).
    eps : float, default: 1e-5
        Floor added to probabilities before taking logarithms of averaged
        probabilities (and of ``"probs"`` outputs).

    Examples
    --------
    >>> import torch
    >>> from torch_blue.vi import KullbackLeiblerLoss, VILinear
    >>> model = VILinear(4, 3)
    >>> loss_fn = KullbackLeiblerLoss(Categorical(), dataset_size=100)
    >>> loss = loss_fn(model(torch.randn(8, 4), samples=2), torch.randint(0, 3, (8,)))
    >>> loss.shape
    torch.Size([])
    """

    distribution_parameters = ("probs",)

    def __init__(self, input_type: str = "logits", eps: float = 1e-5) -> None:
        if input_type not in ("logits", "probs"):
            raise ValueError(
                f"Categorical: input_type must be 'logits' or 'probs', got {input_type!r}"
            )
        self.input_type = input_type
        self.eps = _non_negative("Categorical", "eps", eps)

    def _repr_args(self) -> str:
        return f"input_type={self.input_type!r}"

    def _probs(self, samples: Tensor) -> Tensor:
        if self.input_type == "logits":
            return F.softmax(samples, dim=-1)
        return samples / samples.sum(dim=-1, keepdim=True)

    def predictive_parameters_from_samples(self, samples: Tensor) -> tuple[Tensor]:
        """Class probabilities averaged over the sample dimension, ``(*, C)``."""
        return (self._probs(samples).mean(dim=0),)

    def log_prob(self, sample: Tensor, parameters: tuple[Tensor]) -> Tensor:
        """Log-probability of the labels ``sample`` under class probabilities."""
        log_p = torch.log(parameters[0] + self.eps)
        index = sample.long().unsqueeze(-1)
        index, log_p = torch.broadcast_tensors(index, log_p)
        return log_p.gather(-1, index[..., :1]).squeeze(-1)

    def _check(self, reference: Tensor, samples: Tensor) -> None:
        if not isinstance(reference, Tensor):
            raise TypeError(
                f"Categorical: the target must be a Tensor, got {type(reference).__name__}"
            )
        if (
            reference.is_floating_point()
            or reference.is_complex()
            or reference.dtype == torch.bool
        ):
            raise TypeError(
                f"Categorical: targets must be integer class indices, got {reference.dtype}"
            )
        if samples.dim() < 2 or samples.shape[1:-1] != reference.shape:
            raise ShapeError(
                f"Categorical: target shape {tuple(reference.shape)} does not match the "
                f"model output {tuple(samples.shape)}; expected "
                f"{tuple(samples.shape[1:-1])} (output without sample and class dims)"
            )
        classes = samples.shape[-1]
        if reference.numel() and bool(((reference < 0) | (reference >= classes)).any()):
            raise ValueError(
                f"Categorical: targets must be class indices in [0, {classes - 1}] for "
                f"{classes} classes, got values from {reference.min().item()} to "
                f"{reference.max().item()}"
            )
        if self.input_type == "probs":
            _check_probabilities("Categorical", samples, sums=True)

    def _pointwise_log_likelihood(self, reference: Tensor, samples: Tensor) -> Tensor:
        if self.input_type == "logits":
            log_p = F.log_softmax(samples, dim=-1)
        else:
            log_p = torch.log(self._probs(samples) + self.eps)
        index = reference.long().unsqueeze(0).expand(samples.shape[:-1]).unsqueeze(-1)
        return log_p.gather(-1, index).squeeze(-1)
